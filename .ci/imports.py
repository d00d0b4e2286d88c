#!/usr/bin/env python3
"""Checks that a crate's modules read top-down: no upward imports, no import cycles.

Usage: imports.py CRATE/src [CRATE/src ...]; exits 1 and names each offence.

A module is a file (a/b.rs or a/b/mod.rs is `a::b`; lib.rs/main.rs is the root). An edge
A -> B is any `crate::`/`super::`/`self::` path in A that resolves to module B. An edge to a
strict ancestor is an upward import. Test files (tests.rs, a `tests` module) are left out.
"""
import os, re, sys
from collections import defaultdict

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[-1] == 'mod':
                rel = rel[:-1]
            if rel in (['lib'], ['main']):
                rel = []
            if rel and rel[0] == 'bin':
                continue
            if rel and rel[-1] == 'tests':
                continue
            mods.setdefault(tuple(rel), []).append(p)
    return mods

PATH = re.compile(r'\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)')

def blank_literals(text):
    """Text with comments removed and string and char literals emptied, by a small lexer
    (regexes alone are fooled by `'"'` and raw strings)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            i = text.find('\n', i)
            i = n if i < 0 else i
        elif text.startswith('/*', i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith('/*', i):
                    depth, i = depth + 1, i + 2
                elif text.startswith('*/', i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == '_')):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            i = n if j < 0 else j + len(close)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == '\\' else 1
            i += 1
            out.append('""')
        elif c == "'" and (m := re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])):
            i += m.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def strip(text):
    """Drops comments, string literals and items under `#[cfg(test)]`."""
    text = blank_literals(text)
    out, at = [], 0
    while (i := text.find('#[cfg(test)]', at)) >= 0:
        out.append(text[at:i])
        j = i + len('#[cfg(test)]')
        # the item ends at the first `;` before any `{`, or at the brace that closes it
        semi, brace = text.find(';', j), text.find('{', j)
        if brace < 0 or (0 <= semi < brace):
            at = semi + 1 if semi >= 0 else len(text)
            continue
        depth, k = 0, brace
        while k < len(text):
            depth += text[k] == '{'
            depth -= text[k] == '}'
            k += 1
            if depth == 0:
                break
        at = k
    out.append(text[at:])
    return ''.join(out)


def use_paths(text):
    """Expands `use a::{b, c::{d}}` into full paths, plus inline crate:: paths."""
    out = []
    for m in re.finditer(r'\buse\s+([^;]+);', text):
        out += expand(m.group(1).replace('\n', ' ').replace(' ', ''))
    for m in PATH.finditer(re.sub(r'\buse\s+[^;]+;', '', text)):
        out.append(m.group(1) + m.group(2))
    return out

def expand(s):
    i = s.find('{')
    if i < 0:
        return [s.split(' as ')[0]]
    prefix, inner = s[:i], s[i + 1:s.rfind('}')]
    parts, depth, cur = [], 0, ''
    for ch in inner:
        if ch == ',' and depth == 0:
            parts.append(cur); cur = ''
            continue
        depth += ch == '{'
        depth -= ch == '}'
        cur += ch
    parts.append(cur)
    res = []
    for p in parts:
        if p:
            res += expand(prefix + p)
    return res

def resolve(path, here, mods):
    segs = path.split('::')
    if segs[0] == 'crate':
        base, rest = [], segs[1:]
    elif segs[0] in ('super', 'self'):
        base = list(here)
        while segs and segs[0] in ('super', 'self'):
            if segs[0] == 'super':
                base = base[:-1]
            segs = segs[1:]
        rest = segs
    else:
        return None
    target = tuple(base)
    for s in rest:
        if tuple(list(target) + [s]) in mods:
            target = tuple(list(target) + [s])
        else:
            break
    return target

def main(src):
    mods = modules(src)
    edges = defaultdict(set)
    for mod, files in mods.items():
        for f in files:
            for path in use_paths(strip(open(f).read())):
                t = resolve(path, mod, mods)
                if t is not None and t != mod:
                    edges[mod].add(t)
    name = lambda m: '::'.join(m) or 'crate'
    up = [(a, b) for a in edges for b in edges[a] if b == a[:len(b)]]
    # cycles: Tarjan over non-ancestor edges
    index, low, stack, on, sccs, n = {}, {}, [], set(), [], [0]
    def strong(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1:
                sccs.append(comp)
    sys.setrecursionlimit(10000)
    for v in list(mods):
        if v not in index:
            strong(v)
    for a, b in sorted(up):
        print(f'upward: {name(a)} -> {name(b)}')
    for c in sccs:
        print('cycle: ' + ' <-> '.join(sorted(name(m) for m in c)))
    print(f'{src}: {len(mods)} modules, {sum(len(v) for v in edges.values())} edges, '
          f'{len(up)} upward, {len(sccs)} cycles')
    return 1 if up or sccs else 0

if __name__ == '__main__':
    sys.exit(max(main(s) for s in sys.argv[1:]))
