"""The one way the CLI makes a rich Console.

On a terminal rich fits output to its width. Piped or redirected, there is no width to fit, and rich would
fall back to 80 columns and wrap tables (a confusion matrix's headers split over lines, unreadable to a
script); there a table is printed at its natural width instead.
"""

from __future__ import annotations

from rich.console import Console


class CliConsole(Console):
    def print(self, *objects, **kwargs):
        if not self.is_terminal and "width" not in kwargs:
            from rich.table import Table

            unbounded = self.options.update_width(1_000_000)  # measure without the 80-column cap
            widest = max((self.measure(o, options=unbounded).maximum for o in objects if isinstance(o, Table)),
                         default=0)
            if widest > self.width:
                # print(width=...) cannot exceed the console's width, so widen the console for this call
                saved = self._width
                self.width = widest
                try:
                    return super().print(*objects, **kwargs)
                finally:
                    self._width = saved
        return super().print(*objects, **kwargs)


def make_console(**kwargs) -> Console:
    return CliConsole(highlight=False, **kwargs)
