"""Generated tables in docs/BENCHMARKS.md live between HTML-comment markers, so a script rewrites only its own."""
import re


def write_block(path, name, heading, text):
    """Put `text` between <!-- name:start --> and <!-- name:end --> in `path`, appending a section with `heading`
    the first time."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = path.read_text()
    block = f"{start}\n{text}\n{end}"
    if start in doc:
        doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc += f"\n## {heading}\n\n{block}\n"
    path.write_text(doc)
