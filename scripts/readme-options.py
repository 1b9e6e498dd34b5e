"""Rewrite the options table in README.md from driver/options.py (`make readme`)."""

from pathlib import Path

from driver.options import markdown_table

readme = Path(__file__).resolve().parent.parent / "README.md"
text = readme.read_text()
marker = "<!-- options table: generated"
start = text.index("\n", text.index(marker)) + 1
end = text.index("\n\n", start)
readme.write_text(text[:start] + markdown_table() + text[end:])
print("README.md: options table rewritten")
