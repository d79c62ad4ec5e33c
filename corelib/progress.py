"""Progress bars that suit where the code runs: a widget bar in JupyterLab, lines of text headless.

Every long loop of the workbench (training epochs, feature extraction, CycleGAN, k-reciprocal
neighbours, synthetic data, manifests) takes its bar from :func:`tqdm`. In a Jupyter kernel with a
front end that is tqdm's notebook widget. ``corelib run-notebooks`` (``make demo``, the tests) sets
``COREREID_PROGRESS=text`` for the chapters' kernels: no front end renders a widget there, and
tqdm's carriage-return updates pile up in a saved notebook, so the bar writes a plain line to
stdout instead, at most every ``TEXT_INTERVAL`` seconds and once at the end, which the executed
copy, the HTML report and papermill's log all show readably. It sets ``COREREID_WIDGETS=static``
too: the explorers of :mod:`corelib.widgets` then show their current view as an image with its
description, which the executed copy and the report keep, instead of a widget that no front end
will ever draw (:func:`headless_environment`).
"""

from __future__ import annotations

import functools
import os
import sys

from tqdm.std import tqdm as std_tqdm

PROGRESS_ENV = "COREREID_PROGRESS"
"""``text``: lines of text; anything else (or unset): tqdm's automatic choice."""
WIDGETS_ENV = "COREREID_WIDGETS"
"""``static``: the explorers render as an image and a description, not as live widgets."""
TEXT_INTERVAL = 15.0
"""Seconds between two text lines of one bar."""


class _Lines:
    """A file for tqdm that turns each carriage-return redraw into one line of its own."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


@functools.lru_cache(maxsize=None)
def _text_bar_class():
    class TextBar(std_tqdm):
        """tqdm whose postfix changes wait for the next timed line: tqdm's ``set_postfix`` redraws
        at once by default, which wrote one line per training step (1,338 outputs in chapter 01)."""

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s="", refresh=True):
            super().set_postfix_str(s, refresh=False)

        def set_description(self, desc=None, refresh=True):
            super().set_description(desc, refresh=False)

    return TextBar


def text_mode() -> bool:
    """Whether bars are written as lines of text (:data:`PROGRESS_ENV` is ``text``)."""
    return os.environ.get(PROGRESS_ENV, "").lower() == "text"


def static_widgets() -> bool:
    """Whether the explorers render statically (:data:`WIDGETS_ENV` is ``static``)."""
    return os.environ.get(WIDGETS_ENV, "").lower() == "static"


def headless_environment() -> dict:
    """The variables ``corelib run-notebooks`` sets for kernels that no front end watches."""
    return {PROGRESS_ENV: "text", WIDGETS_ENV: "static"}


def tqdm(*args, **kwargs):
    """A tqdm bar (same arguments as ``tqdm.tqdm``), widget or text as described above."""
    if text_mode():
        text_tqdm = _text_bar_class()
        kwargs.setdefault("file", _Lines(sys.stdout))
        kwargs.setdefault("mininterval", TEXT_INTERVAL)
        kwargs.setdefault("ascii", True)
        kwargs["leave"] = True  # a finished bar's last line stays in the log
        return text_tqdm(*args, **kwargs)
    from tqdm.auto import tqdm as auto_tqdm  # lazy: inside Jupyter, tqdm.auto loads ipywidgets

    return auto_tqdm(*args, **kwargs)
