"Write README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which these machines cannot install)"
import re
from pathlib import Path
from fastcore.nbio import read_nb

def _text(o): return ''.join(o.get('text') or o.get('data', {}).get('text/plain') or '')

def nb2md(path) -> str:
    "Markdown of a notebook: markdown cells as they are, code cells (minus `#|` directives and hidden ones) fenced with their text output"
    parts = []
    for c in read_nb(path).cells:
        src = ''.join(c.source)
        if c.cell_type == 'markdown': parts.append(re.sub(r'\]\((?!https?:|/|#)', '](nbs/', src)); continue  # image and page links are relative to nbs/
        lines = src.splitlines()
        if any(l.strip() in ('#| hide', '#|hide') for l in lines): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: parts.append(f'```python\n{code}\n```')
        out = ''.join(_text(o) for o in c.get('outputs', [])).strip()
        if out: parts.append(f'```\n{out}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    root = Path(__file__).resolve().parent.parent
    (root/'README.md').write_text('<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file -->\n\n' + nb2md(root/'nbs/index.ipynb'))
