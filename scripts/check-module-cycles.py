#!/usr/bin/env python3
"""Fails when modules of a crate depend on each other in a circle.

Crates cannot form cycles (Cargo refuses them); modules inside a crate can. For every crate in
the workspace this reads each module's source, collects the paths it names (`use` trees and
inline `crate::…`, `super::…`, `self::…` paths), and builds, for every parent module, the graph
of "child A uses something in child B" among its children (references from anywhere inside A
count for A). A cycle in any of those graphs is reported. A module using its own parent or
descendants is the tree itself, not a cycle between peers, and is not counted; neither is test
code (`#[cfg(test)]` modules), which may use anything.

Usage: scripts/check-module-cycles.py [CRATE_DIR ...]   (default: every workspace member)
Exit status 1 when a cycle exists. Needs only Python 3; `make lint` runs it.
"""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def workspace_members():
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    return [ROOT / m for m in manifest["workspace"]["members"]]


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def strip_tests(text):
    """Drops `#[cfg(test)]` modules (inline ones run to the end of the file by convention)."""
    m = re.search(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def crate_roots(crate_dir):
    src = crate_dir / "src"
    return [p for p in (src / "lib.rs", src / "main.rs") if p.is_file()]


def module_files(root_file):
    """(module path tuple, file) for the crate rooted at root_file, following `mod x;`."""
    out = []

    def visit(path, file, dir_for_children):
        out.append((path, file))
        text = strip_comments_and_strings(file.read_text())
        for m in re.finditer(r"^\s*((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            if "cfg(test)" in m.group(1):
                continue  # test modules may use anything
            name = m.group(2)
            for cand in (dir_for_children / f"{name}.rs", dir_for_children / name / "mod.rs"):
                if cand.is_file():
                    child_dir = cand.parent if cand.name == "mod.rs" else dir_for_children / name
                    visit(path + (name,), cand, child_dir)
                    break

    visit((), root_file, root_file.parent)
    return out


def expand_use(tree):
    """Expands a `use` tree (`a::{b, c::{d, e}}`) into paths."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    i = tree.index("{")
    prefix, rest = tree[:i], tree[i + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in rest:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand_use(prefix + part)]


def referenced_paths(text):
    text = strip_tests(strip_comments_and_strings(text))
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand_use(m.group(1)))
    paths.extend(re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text))
    return paths


def resolve(path, current, modules):
    """The module (tuple) a path from module `current` points into, or None."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = current
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    elif current + (segs[0],) in modules:
        base = current
    else:
        return None
    target = base
    for s in segs:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            break
    return target


def cycles_in(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            strong(v)
    return out


def check(crate_dir):
    problems = []
    for root in crate_roots(crate_dir):
        files = module_files(root)
        modules = {p for p, _ in files}
        graphs = {}
        witness = {}
        for path, file in files:
            for ref in referenced_paths(file.read_text()):
                target = resolve(ref, path, modules)
                if target is None:
                    continue
                n = 0
                while n < min(len(path), len(target)) and path[n] == target[n]:
                    n += 1
                if n == len(path) or n == len(target):
                    continue  # ancestor or descendant: the tree, not peers
                parent, a, b = path[:n], path[n], target[n]
                graphs.setdefault(parent, {}).setdefault(a, set()).add(b)
                witness.setdefault((parent, a, b), f"{file.relative_to(ROOT)}: {ref}")
        for parent, graph in graphs.items():
            for comp in cycles_in(graph):
                where = "::".join(("crate",) + parent)
                lines = [f"{crate_dir.relative_to(ROOT)} ({root.name}): cycle among {where}::{{{', '.join(comp)}}}"]
                for a in comp:
                    for b in comp:
                        if (parent, a, b) in witness:
                            lines.append(f"    {a} -> {b}  ({witness[(parent, a, b)]})")
                problems.append("\n".join(lines))
    return problems


def main():
    dirs = [pathlib.Path(a).resolve() for a in sys.argv[1:]] or workspace_members()
    problems = [p for d in dirs for p in check(d)]
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"no module cycles in {len(dirs)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
