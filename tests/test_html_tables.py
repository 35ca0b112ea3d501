"""The results tables' HTML pages keep every cell, the bold best values, the intervals and the caption of their Markdown."""

from __future__ import annotations

from html.parser import HTMLParser

from dpaat.html_tables import inline, markdown_page

TABLE = """**Table I.** Accuracy (%) under each attack; `clean` is GAcc.

| CNNs | Method | FGSM | Clean |
| :-- | :-- | --: | --: |
| Lightweight CNNs (MobileNetV2) | AT | **61.7 [55.0, 68.3]** | 70.0 [63.3, 76.7] / 80.1 |
|  | DPAAT | 58.3 [51.7, 65.0] | **71.7 [65.0, 78.3]** |

**Flags (1).**

- AT / MobileNetV2 (seed 0): `ifgsm_not_weaker`: 3 < 5
"""


class Cells(HTMLParser):
    """The table's rows as text, with the cells inside <strong> marked."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self.bold, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag):
        self.tags.pop()

    def handle_data(self, data):
        if "td" in self.tags or "th" in self.tags:
            self.rows[-1][-1] += data
            if "strong" in self.tags:
                self.bold.append(data)


def test_every_cell_keeps_its_text_and_bold_and_numbers_align_right():
    page = markdown_page(TABLE, "Table I")
    parser = Cells()
    parser.feed(page)
    assert parser.rows == [
        ["CNNs", "Method", "FGSM", "Clean"],
        ["Lightweight CNNs (MobileNetV2)", "AT", "61.7 [55.0, 68.3]", "70.0 [63.3, 76.7] / 80.1"],
        ["", "DPAAT", "58.3 [51.7, 65.0]", "71.7 [65.0, 78.3]"],
    ]
    assert parser.bold == ["61.7 [55.0, 68.3]", "71.7 [65.0, 78.3]"]
    assert page.count('<td class=num>') == 4 and "<title>Table I</title>" in page


def test_caption_list_and_inline_marks_become_html_and_the_rest_is_escaped():
    page = markdown_page(TABLE, "Table I")
    assert "<p><strong>Table I.</strong> Accuracy (%) under each attack; <code>clean</code> is GAcc.</p>" in page
    assert "<ul><li>AT / MobileNetV2 (seed 0): <code>ifgsm_not_weaker</code>: 3 &lt; 5</li></ul>" in page
    assert inline("a <b> *directional* 2*3") == "a &lt;b&gt; <em>directional</em> 2*3"
