"""Pictures: matplotlib figures, Bokeh pages and the HTML report. Functions return figures or HTML
strings; callers decide where to save them."""
