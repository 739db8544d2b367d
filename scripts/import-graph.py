#!/usr/bin/env python3
"""Prints the module import graph of a crate's `src/` and fails if it has a circle.

Usage: python3 scripts/import-graph.py [SRC_DIR] [--quiet]

A module is one file (`src/api/settings.rs` is `api::settings`, `src/api/mod.rs` is `api`).
An edge A -> B is a `crate::...` or `super::...` path in A's non-test code that names B or an
item in B (the longest module prefix of the path wins). A parent naming its own children
(`mod x;` and `x::item`) is composition, not an edge. `#[cfg(test)]` modules are left out:
tests may reach anywhere.

Exit status: 0 when the graph has no circle, 1 when it has (each circle is printed).
"""
import os
import re
import sys


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return "crate"
    return "::".join(rel)


def strip_tests(text):
    """Drops `#[cfg(test)]` items (a `mod tests { ... }` block or `mod tests;`)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*([;{])", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        if m.group(3) == ";":
            i = m.end()
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def expand_groups(path):
    """`a::{b, c::d}` -> [`a::b`, `a::c::d`] (one level of nesting is enough here)."""
    m = re.match(r"^(.*?)\{(.*)\}$", path, flags=re.S)
    if not m:
        return [path]
    head, body = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    res = []
    for p in parts:
        p = re.sub(r"\s+", "", p)
        if p:
            res.extend(expand_groups(head + p))
    return res


def references(text):
    """Every `crate::`/`super::` path in the text, `use` groups expanded."""
    refs = []
    for m in re.finditer(r"\buse\s+((?:crate|super)::[^;]*);", text):
        refs.extend(expand_groups(re.sub(r"\s+", "", m.group(1))))
    text = re.sub(r"\buse\s+(?:crate|super)::[^;]*;", "", text)
    refs.extend(re.findall(r"\b((?:crate|super)(?:::(?:super|\w+))+)", text))
    return refs


def resolve(ref, here, modules):
    segs = ref.split("::")
    base = [] if here == "crate" else here.split("::")
    if segs[0] == "crate":
        cur, segs = [], segs[1:]
    else:
        cur = base
        # `super` inside a mod.rs file or a plain file both mean the parent of this module
        while segs and segs[0] == "super":
            cur = cur[:-1]
            segs = segs[1:]
    path = list(cur)
    best = "::".join(path) or "crate"
    for s in segs:
        path.append(s)
        name = "::".join(path)
        if name in modules:
            best = name
        else:
            break
    return best


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    quiet = "--quiet" in sys.argv
    src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(root, n)
                files[module_of(src, p)] = p
    modules = set(files)
    graph = {}
    for mod, path in sorted(files.items()):
        with open(path, encoding="utf-8") as f:
            text = strip_tests(strip_comments(f.read()))
        deps = set()
        for ref in references(text):
            target = resolve(ref, mod, modules)
            # a module naming itself, or a parent naming its child, is not an edge
            if target == mod or target.startswith(mod + "::") or (mod == "crate" and target != "crate"):
                continue
            deps.add(target)
        graph[mod] = deps
    if not quiet:
        for mod in sorted(graph):
            print(f"{mod} -> {', '.join(sorted(graph[mod])) or '(nothing)'}")
    found = cycles(graph)
    if found:
        print(f"\n{len(found)} circle(s) in the import graph of {src}:")
        for c in found:
            print("  " + " <-> ".join(c))
        sys.exit(1)
    print(f"\nno circle among {len(graph)} modules of {src}")


if __name__ == "__main__":
    main()
