#!/usr/bin/env python3
# Import cycles among the runtime's modules, from its `use` declarations (crate::,
# super::, self::, a child module): `python3 runtime/tests/module_cycles.py runtime/src [-v]`.
# Modules are compared with their siblings (the top-level modules with each other,
# `daemon::handle` with `daemon::runner`): an import of a module's own parent or
# child is how a module and its parts fit together, not a cycle. Imports under
# `#[cfg(doc)]` (doc links) are not dependencies. Exits 1 on a cycle.
import re, os, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'runtime/src'
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(dp, f); rel = os.path.relpath(p, root)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == 'mod': parts = parts[:-1]
            name = '::'.join(parts) if parts != ['lib'] else 'crate'
            mods[name] = open(p).read()
# re-exports in lib.rs: pub use a::{X, Y};
reexp = {}
for m in re.finditer(r'pub use (\w+)::\{?([^;]*?)\}?;', mods['crate']):
    for n in re.findall(r'\w+', m.group(2)):
        reexp[n] = m.group(1)
def resolve(cur, path):
    segs = path.split('::')
    if segs[0] == 'crate':
        base = []; segs = segs[1:]
    elif segs[0] == 'super':
        base = cur.split('::')[:-1]; segs = segs[1:]
    elif segs[0] == 'self':
        base = cur.split('::'); segs = segs[1:]
    elif '::'.join(cur.split('::') + [segs[0]]) in mods:
        base = cur.split('::')
    else:
        return None
    # longest prefix that is a module
    best = '::'.join(base) or 'crate'
    for i in range(1, len(segs) + 1):
        cand = '::'.join(base + segs[:i])
        if cand in mods: best = cand
        else: break
    if best == 'crate' and segs and segs[0] in reexp:
        best = reexp[segs[0]]
    return best
def sibling_pair(a, b):
    """The two siblings under the deepest common parent of `a` and `b`, or
    (None, None) when one contains the other."""
    x, y = a.split('::'), b.split('::')
    i = 0
    while i < min(len(x), len(y)) and x[i] == y[i]: i += 1
    if i == len(x) or i == len(y): return None, None
    return '::'.join(x[:i + 1]), '::'.join(y[:i + 1])
edges = {}
for name, src in mods.items():
    if name == 'crate': continue
    text = '\n'.join(l for l in src.split('\n') if not l.strip().startswith('//'))
    # an import only for doc links is not a dependency
    text = re.sub(r'#\[cfg\(doc\)\]\s*use [^;]*;', '', text)
    for decl in re.findall(r'(?<![\w:])use\s+([^;]*);', text):
        for m in re.finditer(r'(?<![:\w])((?:crate|super|self|[a-z_]\w*)(?:::\w+)*)(?:::\{([^}]*)\})?', decl):
            targets = []
            if m.group(2) is None and '::' not in m.group(1): continue
            if m.group(2) is not None:
                for item in re.findall(r'[\w:]+', m.group(2)):
                    item = item.split('::')[0]
                    if item == 'self': targets.append(resolve(name, m.group(1)))
                    else: targets.append(resolve(name, m.group(1) + '::' + item))
            else:
                targets.append(resolve(name, m.group(1)))
            for t in targets:
                if t and t != name and t != 'crate':
                    a, b = sibling_pair(name, t)
                    if a is not None:
                        edges.setdefault(a, set()).add(b)
# cycles via SCC
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in list(mods): 
    if v not in idx: sc(v)
if '-v' in sys.argv:
    for k in sorted(edges): print(k, '->', ', '.join(sorted(edges[k])))
for comp in sccs:
    print('CYCLE:', ' , '.join(sorted(comp)))
    for a in comp:
        for b in sorted(edges.get(a, ())):
            if b in comp: print('   ', a, '->', b)
print("cycles:", len(sccs))
sys.exit(1 if sccs else 0)
