"""Rendered output is exactly what the template and the values say: carriage returns in values
or templates are not turned into newlines by Liquid's output buffers."""

from cjo.content.render import Renderer
from cjo.model.content import ContentItem, Variant


def test_carriage_returns_survive_rendering() -> None:
    source = "{{ profile.name }}{% for i in (1..2) %}\r{{ i }}{% endfor %}{% capture c %}x\r\n" \
             "{% endcapture %}{{ c }}"
    item = ContentItem("x", (Variant("email", {"f": source}),))
    fields = Renderer().render(item, item.variants[0], {"profile": {"name": "a\rb"}})
    assert fields == {"f": "a\rb\r1\r2x\r\n"}
