"""rnnlab-inspect: a page whose spans are the whole text, a PNG, and the model's own numbers."""

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.cli.inspect import display_pieces, inspect
from rnnlab.data.vocab import Vocab
from rnnlab.report.units import correlations, pick_units, text_features, write_page
from rnnlab.training.module import RNNLMModule
from tests.conftest import TINY_TEXT, one_sentence

#: the tiny corpus's characters only (it has no quotes or brackets), two lines, one indented
TEXT = "line 3: the quick fox jumps over the lazy dog, 4 times.\n  the slow cat runs.\n"


class Spans(HTMLParser):
    """The text of each ``<div class="text">``, joined from its token spans."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "div" and ("class", "text") in attrs:
            self.texts.append("")
        self.depth += tag == "span"

    def handle_endtag(self, tag: str) -> None:
        self.depth -= tag == "span"

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.texts[-1] += data


def checkpoint(run: Path) -> str:
    return str(run / "checkpoints" / "last.ckpt")


def text_file(tmp_path: Path, text: str = TEXT) -> str:
    """``text=<a file>``: Hydra's override grammar would want most texts quoted."""
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return f"text={path}"


def test_the_page_colours_the_whole_text_and_the_png_is_an_image(
    trained_run: Path, tmp_path: Path, cli
):
    result = cli(
        "inspect",
        f"ckpt_path={checkpoint(trained_run)}",
        text_file(tmp_path),
        f"hydra.run.dir={tmp_path}",
    )
    assert result.code == 0, result.err[-2000:]
    parser = Spans()
    parser.feed((tmp_path / "inspect.html").read_text(encoding="utf-8"))
    # one block per feature that varies (position in line, indentation), then the loss strip
    assert parser.texts == [TEXT] * 3
    image = matplotlib.image.imread(tmp_path / "inspect.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
    assert "<script" not in (tmp_path / "inspect.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("backend", ["builtin", "custom"])
def test_top5_and_losses_are_the_models_own(trained_run: Path, backend: str):
    module = RNNLMModule.from_checkpoint(checkpoint(trained_run), backend)
    seen = inspect(module, TEXT, -1, allow_unknown=False)
    ids = torch.tensor([module.vocab.prompt_ids(TEXT)])
    with torch.no_grad():
        logits, _ = module.net(ids)
        feats, _ = module.net.features(ids)
    probs = torch.softmax(logits[0].double(), -1)
    top = probs.topk(5, dim=1)
    for position, options in enumerate(seen.top5):
        got = [p for _, p in options]
        assert got == pytest.approx(top.values[position].tolist(), abs=1e-6)
        assert [module.vocab.stoi[t] for t, _ in options] == top.indices[position].tolist()
        assert sum(got) <= 1 + 1e-9
    expected = F.cross_entropy(logits[0, :-1].double(), ids[0, 1:], reduction="none")
    assert np.isnan(seen.losses[0])
    np.testing.assert_allclose(seen.losses[1:], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(seen.acts, feats[0].double().numpy(), atol=1e-6)


def test_features_and_the_units_that_follow_them():
    text = 'line 3: the (quick) fox said "jumps over",\n  the lazy dog.\n'
    pieces = list(text)
    features = text_features(pieces)
    assert features["position in line"][:3].tolist() == [0, 1, 2]
    assert features["position in line"][text.index("\n") + 1] == 0
    assert features["inside quotes"][text.index("jumps")] == 1
    assert features["inside quotes"][text.index("fox")] == 0
    assert features["bracket depth"][text.index("quick")] == 1
    assert features["bracket depth"][text.index("fox")] == 0
    assert features["indentation"][text.index("lazy")] == 2
    # a unit that is the feature itself correlates 1, its negative -1
    acts = np.stack([features["bracket depth"], -features["indentation"]], 1)
    np.testing.assert_allclose(correlations(acts, features["bracket depth"])[0], 1.0)
    chosen = {name: (unit, r) for unit, name, r in pick_units(acts, features, None)}
    assert chosen["indentation"] == (1, pytest.approx(-1.0))
    assert [u for u, _, _ in pick_units(acts, features, [1])] == [1]


def test_unknown_tokens_are_named_or_mapped(trained_run: Path, tmp_path: Path, cli):
    assert "€" not in TINY_TEXT
    args = (
        f"ckpt_path={checkpoint(trained_run)}",
        text_file(tmp_path, "the € fox\n"),
        f"hydra.run.dir={tmp_path}",
    )
    assert "'€'" in one_sentence(cli("inspect", *args))
    assert cli("inspect", *args, "unknown=unk").code == 0
    module = RNNLMModule.from_checkpoint(checkpoint(trained_run))
    assert "".join(inspect(module, "the € fox", -1, True).pieces) == "the € fox"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("units=[999]", "units must lie in 0 .. 31"),
        ("units=3", "units must be a list"),
        ("layer=4", "layer must be -1 or 0 .. 0"),
        ("text=no/such.txt", "text=no/such.txt names no file"),
        ("text=''", "text is empty"),
    ],
)
def test_bad_options_get_one_sentence(trained_run: Path, tmp_path: Path, cli, override, message):
    result = cli(
        "inspect",
        f"ckpt_path={checkpoint(trained_run)}",
        text_file(tmp_path),
        override,
        f"hydra.run.dir={tmp_path}",
    )
    assert message in one_sentence(result)


def test_word_level_pieces_read_as_the_text():
    vocab = Vocab.build("the cat sat\non the mat\n", "word")
    ids = vocab.prompt_ids("the cat sat\non the mat\n")
    assert "".join(display_pieces(vocab, ids, "")) == "the cat sat\non the mat\n"


def test_a_word_level_page_names_unknown_words_and_gives_the_first_token_no_loss(tmp_path):
    """An out-of-vocabulary word reads ``<unk>`` (what the model saw), not a replacement
    character; the first token, which nothing predicts, has no loss rather than ``nan``."""
    vocab = Vocab.build("the cat sat\non the mat\n", "word")
    ids = vocab.prompt_ids("the dog sat\n", allow_unknown=True)
    pieces = display_pieces(vocab, ids, "")
    assert pieces == ["the ", "<unk> ", "sat", "\n"]
    acts = np.linspace(-1, 1, 2 * len(ids)).reshape(len(ids), 2)
    losses = np.array([np.nan, 2.5, 0.25, 1.0])
    top5 = [[("cat", 0.5)]] * len(ids)
    page = write_page(tmp_path / "p.html", "t", pieces, acts, [(0, "line", 0.5)], losses, top5)
    html_text = page.read_text(encoding="utf-8")
    assert "&lt;unk&gt; " in html_text and "\ufffd" not in html_text
    assert "nan" not in html_text
    assert "<td>0</td><td>&#x27;the &#x27;</td><td>-</td>" in html_text
    assert "<td>1</td><td>&#x27;&lt;unk&gt; &#x27;</td><td>2.500</td>" in html_text
