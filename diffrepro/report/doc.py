"""A tiny document model rendered to Markdown and to self-contained HTML (no extra dependency)."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import List

import pandas as pd


@dataclass
class Doc:
    title: str
    blocks: List[tuple] = field(default_factory=list)

    def h(self, text, level=2):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def items(self, lead: str, entries):
        """A bold lead line and a bulleted list."""
        self.blocks.append(("items", lead, list(entries)))

    def table(self, df: pd.DataFrame, caption: str = ""):
        self.blocks.append(("table", df, caption))

    def image(self, path: str, caption: str = ""):
        self.blocks.append(("img", path, caption))

    # ------------------------------------------------------------------ renderers
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "items":
                out += [f"**{b[1]}**", ""] + [f"- {t}" for t in b[2]] + [""]
            elif b[0] == "table":
                df, cap = b[1], b[2]
                if cap:
                    out += [f"*{cap}*", ""]
                if df.empty:
                    out += ["(no rows)", ""]
                    continue
                cols = [str(c) for c in df.columns]
                out.append("| " + " | ".join(cols) + " |")
                out.append("|" + "|".join("---" for _ in cols) + "|")
                for row in df.itertuples(index=False):
                    out.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
                out.append("")
            elif b[0] == "img":
                out += [f"![{b[2]}]({b[1]})", "", f"*{b[2]}*" if b[2] else "", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
               "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
               "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
               "th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}"
               "figcaption{font-size:0.85em;color:#555}code{background:#f6f6f6;padding:1px 3px}</style>",
               "</head><body>", f"<h1>{e(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "items":
                out.append(f"<p><b>{_inline(b[1])}</b></p><ul>" + "".join(f"<li>{_inline(t)}</li>" for t in b[2])
                           + "</ul>")
            elif b[0] == "table":
                df, cap = b[1], b[2]
                out.append("<table>" + (f"<caption>{e(cap)}</caption>" if cap else ""))
                out.append("<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in df.columns) + "</tr>")
                for row in df.itertuples(index=False):
                    out.append("<tr>" + "".join(f"<td>{_inline(_cell(v))}</td>" for v in row) + "</tr>")
                out.append("</table>")
            elif b[0] == "img":
                out.append(f"<figure><img src='{e(b[1])}' alt='{e(b[2])}'><figcaption>{e(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "–"
        return f"{v:.4g}"
    return str(v)


def _inline(text: str) -> str:
    """Escape, then render `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
