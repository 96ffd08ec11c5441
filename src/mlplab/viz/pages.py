"""Every HTML page mlplab writes (run report, comparison, embedding explorer) comes from templates/ through here.

One Jinja2 environment with autoescape: a value reaches the markup escaped unless it is Markup, which only this
package builds (from escaped parts or from our own fixed strings). One page skeleton (templates/base.html) and one
Content-Security-Policy for all pages. The BokehJS bundle is inlined from bokeh.resources, with literal URLs in it
written so that no external address appears in the file (see offline_script).
"""

from __future__ import annotations

import functools
import html
import json
import re

from markupsafe import Markup

# No network at all: images are data: URIs, styles and scripts inline, and a frame may only hold a srcdoc page
# (which inherits this policy, so a page that tried to fetch a CDN script would be blocked and logged, not leak).
# BokehJS's WebGL layer (regl) compiles shader code with new Function, hence 'unsafe-eval'.
CSP = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline' "
       "'unsafe-eval'; font-src data:; frame-src about: data:; child-src about: data:")

# Namespace identifiers: compared as strings by the DOM, never fetched.
XML_NAMESPACES = (
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/1998/Math/MathML",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/2000/xmlns/",
    "http://www.w3.org/XML/1998/namespace",
)
_URL = re.compile(r"\b(https?)://")

# Bokeh components an explorer needs: the core library and its WebGL renderer (no widgets, tables or MathJax).
BOKEH_COMPONENTS = ("bokeh", "bokeh-gl")


def esc(value) -> Markup:
    """HTML-escape anything (quotes too, so the result is safe inside attribute values); Markup passes as is."""
    if hasattr(value, "__html__"):
        return Markup(value.__html__())
    return Markup(html.escape("" if value is None else str(value), quote=True))


def offline_script(script: str) -> str:
    """Write "://" as ":\\/\\/" in a script's URL strings, except XML namespace names.

    BokehJS carries URL strings in license comments and in code paths our pages never run (MathJax and map
    loaders); JavaScript reads ":\\/\\/" as the same string, so behaviour is unchanged and the file holds no
    literal external URL. The CSP is what actually stops any request.
    """
    def sub(m):
        if any(script.startswith(ns, m.start()) for ns in XML_NAMESPACES):
            return m.group(0)
        return m.group(1) + r":\/\/"
    return _URL.sub(sub, script)


_SCRIPT = re.compile(r"(<script\b[^>]*>)(.*?)(</script>)", re.DOTALL | re.IGNORECASE)


def make_offline(page: str) -> str:
    """A complete page made elsewhere (Bokeh's file_html) held to our rules: the CSP meta tag added and every
    inline script's URL strings defanged (offline_script)."""
    page = _SCRIPT.sub(lambda m: m.group(1) + offline_script(m.group(2)) + m.group(3), page)
    meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    return page.replace("<head>", "<head>\n" + meta, 1)


def script_json(value) -> Markup:
    """JSON for a <script type="application/json"> element: '<', '>' and '&' as \\u escapes, so no string in it
    can close the element or open a comment, and JSON.parse reads back exactly the same value."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


@functools.lru_cache(maxsize=1)
def bokeh_bundle() -> Markup:
    """The BokehJS library (core + WebGL) as one inline script body, ready for a <script> element."""
    from bokeh.resources import Resources

    resources = Resources(mode="inline", components=list(BOKEH_COMPONENTS))
    return Markup(offline_script("\n".join(resources.js_raw)))


def _finalize(value):
    # Autoescaping with the same entities as esc() (html.escape: &quot; and &#x27;), so every page escapes alike.
    return esc(value)


@functools.lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("mlplab.viz", "templates"), autoescape=True, finalize=_finalize,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals.update(csp=Markup(CSP))  # a constant of ours, with quotes that must stay quotes
    return env


def render(template: str, **values) -> str:
    """Render templates/<template> with `values`; strings are escaped, Markup is inserted as it is."""
    return environment().get_template(template).render(**values)
