#!/usr/bin/env python3
"""README figures from a CI run, never typed by hand.

`.ci/run` records what it measured in a tab-separated file (one `kind, name, value` per line):

    binary  x86_64-unknown-linux-gnu          5420688      (stripped release binary, bytes)
    deb     amd64                              1963400      (package, bytes)
    stage   cargo test                         156          (stage time, s)
    meta    rustc                              rustc 1.91.0 (...)

and this script rewrites the README blocks between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->` (NAME: `sizes`, `ci-times`) from it.

    readme-figures.py FIGURES.tsv --check   exit 1 when a size in the README is more than 1 %
                                            off the measured one (timings vary between machines
                                            and are not checked)
    readme-figures.py FIGURES.tsv --write   rewrite the blocks in README.md (commit the result)
    readme-figures.py FIGURES.tsv --print   print the blocks
"""

import argparse
import datetime
import pathlib
import re
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SIZE_TOLERANCE = 0.01
TARGETS = [
    ("x86_64-unknown-linux-gnu", "amd64"),
    ("aarch64-unknown-linux-gnu", "arm64"),
    ("armv7-unknown-linux-gnueabihf", "armhf"),
]
AARCH64_BUDGET = 10 * 1000 * 1000


def read_figures(path):
    figures = {"binary": {}, "deb": {}, "stage": [], "meta": {}}
    for line in pathlib.Path(path).read_text().splitlines():
        if not line.strip():
            continue
        kind, name, value = line.split("\t", 2)
        if kind == "stage":
            figures["stage"].append((name, int(value)))
        elif kind in ("binary", "deb"):
            figures[kind][name] = int(value)
        else:
            figures["meta"][name] = value
    return figures


def mib(n):
    return f"{n / (1024 * 1024):.1f} MiB"


def duration(seconds):
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def sizes_block(figures):
    date = figures["meta"].get("date", datetime.date.today().isoformat())
    rustc = figures["meta"].get("rustc", "rustc")
    lines = [
        "Release binaries, stripped (`opt-level = \"s\"`, LTO, one codegen unit, `panic = \"abort\"`;",
        f"as packaged: no simulator, no demo), and the packages, as `.ci/run` built them on {date} with",
        f"{rustc}:",
        "",
        "| target | binary | .deb |",
        "|---|---|---|",
    ]
    for target, arch in TARGETS:
        binary = figures["binary"].get(target)
        deb = figures["deb"].get(arch)
        if binary is None or deb is None:
            continue
        shown = f"{binary:,} bytes ({mib(binary)})"
        if target.startswith("aarch64"):
            met = "met" if binary < AARCH64_BUDGET else "**not met**"
            shown = f"**{shown}**, budget 10 MB: {met} (CI fails above it)"
        lines.append(f"| {target} ({arch}) | {shown} | {deb:,} bytes |")
    return "\n".join(lines)


def times_block(figures):
    stages = figures["stage"]
    total = sum(seconds for _, seconds in stages)
    date = figures["meta"].get("date", datetime.date.today().isoformat())
    lines = [
        f"Stage times of the last recorded run ({date}, {figures['meta'].get('machine', 'the development machine')}), "
        f"{duration(total)} in all:",
        "",
        "| stage | time |",
        "|---|---|",
    ]
    lines += [f"| {name} | {duration(seconds)} |" for name, seconds in stages]
    return "\n".join(lines)


BLOCKS = {"sizes": sizes_block, "ci-times": times_block}


def block_pattern(name):
    return re.compile(
        rf"(<!-- figures:{re.escape(name)} -->\n)(.*?)(\n<!-- /figures:{re.escape(name)} -->)", re.S
    )


def documented_sizes(text):
    """(target, binary bytes, deb bytes) from the README's sizes block."""
    match = block_pattern("sizes").search(text)
    if not match:
        return None
    rows = {}
    for target, binary, deb in re.findall(
        r"^\| (\S+) \(\w+\) \| \**([\d,]+) bytes.*?\| ([\d,]+) bytes \|$", match.group(2), re.M
    ):
        rows[target] = (int(binary.replace(",", "")), int(deb.replace(",", "")))
    return rows


def check(figures, text):
    documented = documented_sizes(text)
    if documented is None:
        return ["README.md has no <!-- figures:sizes --> block"]
    problems = []
    for target, arch in TARGETS:
        measured = (figures["binary"].get(target), figures["deb"].get(arch))
        if None in measured:
            continue
        shown = documented.get(target)
        if shown is None:
            problems.append(f"{target}: not in the README")
            continue
        for what, now, then in zip(("binary", ".deb"), measured, shown):
            drift = abs(now - then) / now
            if drift > SIZE_TOLERANCE:
                problems.append(f"{target} {what}: README says {then:,} bytes, CI measured {now:,} ({drift:.1%} off)")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--print", action="store_true")
    parser.add_argument("--readme", default=str(README))
    args = parser.parse_args()
    figures = read_figures(args.figures)
    readme = pathlib.Path(args.readme)
    text = readme.read_text()
    if args.print:
        for name, render in BLOCKS.items():
            print(f"<!-- figures:{name} -->\n{render(figures)}\n<!-- /figures:{name} -->\n")
        return 0
    if args.check:
        problems = check(figures, text)
        for problem in problems:
            print(f"readme-figures: {problem}", file=sys.stderr)
        if problems:
            print("readme-figures: README figures are out of date; run .ci/readme-figures.py FIGURES --write "
                  "and commit README.md", file=sys.stderr)
            return 1
        print("readme-figures: README sizes match this build (within 1 %)")
        return 0
    for name, render in BLOCKS.items():
        pattern = block_pattern(name)
        if not pattern.search(text):
            print(f"readme-figures: README.md has no <!-- figures:{name} --> block", file=sys.stderr)
            return 1
        text = pattern.sub(lambda m: m.group(1) + render(figures) + m.group(3), text)
    readme.write_text(text)
    print(f"readme-figures: {readme} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
