"""Regenerate sample.txt: English sentences from the prose of Python's own documentation.

Source: CPython 3.11's `pydoc_data.topics` (the Language Reference text shipped with every Python)
and the docstrings of some standard-library modules, (c) Python Software Foundation, under the PSF
License Agreement, which allows copying and redistribution with this notice.
Run: python data/make_sample.py > data/sample.txt
"""

import importlib
import inspect
import re
import sys

from pydoc_data.topics import topics

# Docstrings of these standard-library modules add prose beyond the Language Reference.
MODULES = ["argparse", "asyncio", "collections", "concurrent.futures", "csv", "datetime", "decimal", "email",
           "functools", "http.client", "itertools", "json", "logging", "os", "pathlib", "pickle", "random",
           "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "threading",
           "typing", "unittest", "urllib.request", "zipfile"]


def texts() -> list[str]:
    out = [topics[name] for name in sorted(topics)]
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        out.append(inspect.getdoc(module) or "")
        for _, obj in sorted(vars(module).items()):
            if inspect.isfunction(obj) or inspect.isclass(obj):
                out.append(inspect.getdoc(obj) or "")
    return out

TARGET = 2000


def sentences() -> list[str]:
    seen, out = set(), []
    for text in texts():
        # Keep prose paragraphs only: drop indented code blocks and reST-ish markup lines.
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if not p.lstrip().startswith((">>>", "*", "+--"))]
        for para in paragraphs:
            flat = " ".join(para.split())
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
                if not (40 <= len(s) <= 300) or not s[0].isupper() or s[-1] not in ".!?":
                    continue
                if re.search(r"[{}=<>|\\]|\*\*|::|\.\.\.|https?:", s):
                    continue
                if sum(c.isalpha() or c == " " for c in s) / len(s) < 0.85 or s in seen:
                    continue
                seen.add(s)
                out.append(s)
    return out


if __name__ == "__main__":
    lines = sentences()
    if len(lines) < TARGET:
        sys.exit(f"only {len(lines)} sentences found")
    step = len(lines) / TARGET
    sys.stdout.write("\n".join(lines[int(i * step)] for i in range(TARGET)) + "\n")
