#!/usr/bin/env python3
"""Benchmark baseline: a ticket document printed the way a typical python-escpos integrator would.

    python3 tests/escpos/python_escpos_baseline.py DOCUMENT_JSON [--native] [--out FILE]

Reads a ticket in the daemon's document format (plugins/src/document.rs) and produces the same
content with python-escpos's public API on a `Dummy` printer (80 mm paper, 576 dots, font A):
text wrapped at the same columns as our driver, `set()` per block, `qr()` (an image by default,
at python-escpos's default module size; `--native` uses the printer's own QR command with our
4-dot modules), `cut()`. Prints `{"bytes": N, "native": bool}`; `--out` writes the bytes.
Run it with the venv from setup-python.sh.
"""

import argparse
import contextlib
import json
import sys

from escpos.constants import QR_ECLEVEL_M
from escpos.printer import Dummy

# Geometry of plugins/src/document.rs.
PAPER_DOTS = 576
CELL_WIDTH_DOTS = 12
MAX_SCALE = 8
QR_MODULE_DOTS = 4


def columns(paper_dots, width_scale):
    return max(paper_dots // (CELL_WIDTH_DOTS * max(width_scale, 1)), 1)


def fitted_width(text, paper_dots, width_scale):
    longest = max((len(word) for word in text.split()), default=0)
    scale = min(max(width_scale, 1), MAX_SCALE)
    while scale > 1 and columns(paper_dots, scale) < longest:
        scale -= 1
    return scale


def wrap(text, cols):
    """Port of document::wrap: at newlines, else at the last space that fits."""
    cols = max(cols, 1)
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            while len(word) > cols:
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cols])
                word = word[cols:]
            if line and len(line) + 1 + len(word) > cols:
                lines.append(line)
                line = ""
            if line:
                line += " "
            line += word
        lines.append(line)
    return lines


def size_arguments(width, height):
    if (width, height) == (1, 1):
        return {"normal_textsize": True}
    if (width, height) == (2, 1):
        return {"double_width": True}
    if (width, height) == (1, 2):
        return {"double_height": True}
    if (width, height) == (2, 2):
        return {"double_width": True, "double_height": True}
    return {"custom_size": True, "width": width, "height": height}


def render(document, native):
    p = Dummy()
    p.hw("INIT")  # ESC @: a ticket printer starts every job from a known state
    for block in document["blocks"]:
        kind = block["kind"]
        if kind == "text":
            text = block["text"]
            width = fitted_width(text, PAPER_DOTS, block.get("width", 1))
            height = block.get("height", 1)
            p.set(
                align=block.get("align", "left"),
                bold=block.get("bold", False),
                **size_arguments(width, height),
            )
            for line in wrap(text, columns(PAPER_DOTS, width)):
                p.text(line + "\n")
        elif kind == "feed":
            p.set(normal_textsize=True)
            p.ln(block["lines"])
        elif kind == "qr":
            p.set(align="center")
            if native:
                p.qr(block["data"], ec=QR_ECLEVEL_M, native=True, size=QR_MODULE_DOTS)
            else:
                p.qr(block["data"], ec=QR_ECLEVEL_M)
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    p.cut()
    return p.output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document")
    parser.add_argument("--native", action="store_true", help="native QR (GS ( k)")
    parser.add_argument("--out", help="write the ESC/POS bytes to this file")
    args = parser.parse_args()
    with open(args.document, encoding="utf-8") as f:
        document = json.load(f)
    # python-escpos prints notes (e.g. about the profile's unknown paper width) on stdout.
    with contextlib.redirect_stdout(sys.stderr):
        data = render(document, args.native)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    json.dump({"bytes": len(data), "native": args.native}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
