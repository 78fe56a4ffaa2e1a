#!/usr/bin/env python3
# Vendored from the workplace tools (shared/tools/cycles.py) so that CI keeps the crates free of
# import cycles between files (docs/architecture.md, "Where the code is").
"""Import cycles between the files of a Rust crate, from `crate::`/`super::` paths in non-test code.
Edges between a module and its own parent (mod.rs re-exports, `super::` into the parent) are ignored.
Usage: cycles.py SRC_DIR...   Prints one line per cycle (strongly connected set of files); exit 1 if any."""
import os, re, sys

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"): continue
            p = os.path.join(root, f); rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"): rel = rel[:-1]
            mods[tuple(rel)] = p
    return mods

def resolve(mods, path):
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods: return tuple(path[:n])
    return None

def edges(mods):
    out = {m: set() for m in mods}
    for m, p in mods.items():
        text = open(p, encoding="utf-8", errors="replace").read()
        text = text.split("#[cfg(test)]")[0]
        text = re.sub(r"//[^\n]*", "", text)
        here = list(m)   # `self::` is this file's module, `super::` its parent
        for mt in re.finditer(r"\b(crate|super|self)((?:::\w+)*)", text):
            base, rest = mt.group(1), mt.group(2).split("::")[1:]
            if not rest and not text[mt.end():].startswith("::{"): continue
            if base == "crate": path = rest
            elif base == "self": path = here + rest
            else:
                up = here[:-1]
                while rest and rest[0] == "super": up = up[:-1]; rest = rest[1:]
                path = up + rest
            # `use x::{a, b}` groups: also resolve each name in the braces
            tail = text[mt.end():mt.end() + 400]
            names = []
            if tail.startswith("::{"):
                depth, buf = 0, ""
                for ch in tail[2:]:
                    buf += ch; depth += ch == "{"; depth -= ch == "}"
                    if depth == 0: break
                names = re.findall(r"(\w+)(?:::\w+)*", buf)
            for full in [path] + [path + [n] for n in names]:
                t = resolve(mods, full)
                if t is None or t == m: continue
                if t == m[:-1] or m == t[:-1]: continue   # parent <-> child
                out[m].add(t)
    return out

def sccs(g):
    index, low, stack, on, res, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in g[v]:
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            c = []
            while True:
                w = stack.pop(); on.discard(w); c.append(w)
                if w == v: break
            if len(c) > 1: res.append(c)
    sys.setrecursionlimit(10000)
    for v in g:
        if v not in index: visit(v)
    return res

found = 0
for src in sys.argv[1:]:
    mods = modules(src)
    for c in sccs(edges(mods)):
        found += 1
        print(f"{src}: " + ", ".join(sorted(os.path.relpath(mods[m], src) for m in c)))
sys.exit(1 if found else 0)
