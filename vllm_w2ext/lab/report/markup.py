"""Report blocks as markdown and as one static HTML page (images by relative path, flagged cells,
written ``**...**``, in red; ``pre`` blocks as preformatted text): the lab's report (blocks.py) and the
demo's (lab/demo.py) both render through here."""
from __future__ import annotations

import html


def to_markdown(bs: list[tuple]) -> str:
    out = []
    for blk in bs:
        k = blk[0]
        if k in ("h1", "h2", "h3"):
            out += ["#" * int(k[1]) + " " + blk[1], ""]
        elif k == "p":
            out += [blk[1], ""]
        elif k == "pre":
            out += ["```", blk[1].rstrip("\n"), "```", ""]
        elif k == "img" and blk[1]:
            out += [f"![{blk[1]}]({blk[1]})", ""]
        elif k == "table":
            out += ["| " + " | ".join(blk[1]) + " |", "|" + "---|" * len(blk[1])]
            out += ["| " + " | ".join(r) + " |" for r in blk[2]] or ["| (no runs) |"]
            out.append("")
    return "\n".join(out)


def to_html(bs: list[tuple], title: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222;padding:0 1em}"
           "pre{background:#f6f6f6;padding:.6em;font-size:12px;white-space:pre-wrap}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}"
           "th{background:#eef}img{max-width:100%;border:1px solid #ddd}.flag{color:#b00;font-weight:bold}"
           "</style></head><body>"]
    for blk in bs:
        k = blk[0]
        if k in ("h1", "h2", "h3"):
            out.append(f"<{k}>{e(blk[1])}</{k}>")
        elif k == "p":
            out.append(f"<p>{e(blk[1])}</p>")
        elif k == "pre":
            out.append(f"<pre>{e(blk[1])}</pre>")
        elif k == "img" and blk[1]:
            out.append(f"<p><img src='{e(blk[1])}' alt='{e(blk[1])}'></p>")
        elif k == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in blk[1]) + "</tr>")
            for r in blk[2]:
                out.append("<tr>" + "".join(f"<td class='flag'>{e(c.strip('*'))}</td>" if c.startswith("**")
                                            else f"<td>{e(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
