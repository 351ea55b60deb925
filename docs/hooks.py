"""mkdocs hook: fills the generated parts of the configuration reference from the schema and the
config tree when the site is built (training/config/reference.py), so they cannot go stale."""

from training.config import reference

MARKERS = {
    "<!-- generated: config groups -->": reference.groups_markdown,
    "<!-- generated: config keys -->": reference.keys_markdown,
}


def on_page_markdown(markdown, page, config, files):
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
