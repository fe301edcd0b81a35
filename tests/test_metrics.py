"""WER/CER metrics, text normalisation and the evaluation files, checked against hand-computed cases."""

import csv
import json
import logging
import subprocess
import sys

import pytest

from training.evaluation_report import create_evaluation_report
from training.metrics import compute_cer, compute_detailed_wer_metrics, compute_wer, evaluate_model
from whisper_triton.text import normalize_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ref "the cat sat on the mat" (6 words) vs "the cat sit on mat": "sat" -> "sit" and one "the" deleted.
CAT_REF = "The cat sat on the mat."
CAT_HYP = "the cat sit on mat"


# --- normalisation -------------------------------------------------------------------------------------


def test_normalize_text_applies_openai_english_rules():
    # Abbreviation, contraction, British spelling, case and punctuation, as OpenAI's normaliser does.
    assert normalize_text("Mr. Smith's colour!") == "mister smith is color"
    assert normalize_text("  Hello,\tWORLD \n") == "hello world"
    assert normalize_text("Uh, um.") == ""


def test_normalize_text_rejects_non_strings():
    with pytest.raises(TypeError, match="NoneType"):
        normalize_text(None)


def test_modules_import_without_heavy_dependencies():
    # A fresh interpreter: other tests in this process may already have imported torch or matplotlib.
    code = (
        "import sys, training.metrics, training.evaluation_report, whisper_triton.text\n"
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- WER and CER ---------------------------------------------------------------------------------------


def test_wer_substitution_and_deletion():
    assert compute_wer(CAT_HYP, CAT_REF) == pytest.approx(2 / 6)
    assert compute_wer([CAT_HYP], [CAT_REF]) == pytest.approx(2 / 6)


def test_wer_counts_insertions_and_can_exceed_one():
    assert compute_wer("a c b", "a b") == pytest.approx(1 / 2)
    # Three inserted words against a one-word reference.
    assert compute_wer("hello there big world", "hello") == pytest.approx(3.0)


def test_wer_is_corpus_level_not_mean_of_utterances():
    # 1 error over 5 reference words; the mean of per-utterance WERs would be (0 + 1) / 2.
    assert compute_wer(["a b c d", "x"], ["a b c d", "e"]) == pytest.approx(1 / 5)


def test_cer_by_hand():
    # kitten -> sitting is the textbook Levenshtein distance of 3 (k->s, e->i, +g).
    assert compute_cer("sitting", "kitten") == pytest.approx(3 / 6)
    assert compute_cer("kitten", "sitting") == pytest.approx(3 / 7)
    # The space between words is a character: deleting it is 1 edit over 3 characters.
    assert compute_cer("ab", "a b", normalize=False) == pytest.approx(1 / 3)


def test_normalisation_removes_spelling_and_abbreviation_differences():
    prediction, reference = "Mr. Smith's colour", "mister smith's color"
    assert compute_wer(prediction, reference) == 0.0
    assert compute_cer(prediction, reference) == 0.0
    # Without normalisation every word differs: "Mr."/"mister", "Smith's"/"smith's", "colour"/"color".
    assert compute_wer(prediction, reference, normalize=False) == pytest.approx(1.0)
    assert compute_cer(prediction, reference, normalize=False) > 0


def test_without_normalisation_case_counts_but_whitespace_does_not():
    assert compute_wer("The cat", "the cat", normalize=False) == pytest.approx(1 / 2)
    assert compute_wer("the \t cat\n", "the cat", normalize=False) == 0.0
    assert compute_cer("the   cat", "the cat", normalize=False) == 0.0


# --- detailed metrics ----------------------------------------------------------------------------------


def test_detailed_metrics_counts():
    m = compute_detailed_wer_metrics([CAT_HYP, "a c b"], [CAT_REF, "a b"])
    assert (m["substitutions"], m["deletions"], m["insertions"], m["hits"]) == (1, 1, 1, 6)
    assert m["num_reference_words"] == 8
    assert m["num_predicted_words"] == 8
    assert m["wer"] == pytest.approx(3 / 8)
    # Word accuracy is hits / reference words: the insertion in "a c b" does not lower it.
    assert m["word_accuracy"] == pytest.approx(6 / 8)
    assert m["sentence_accuracy"] == 0.0
    assert m["num_utterances"] == 2
    # "the cat sat on the mat" + "a b" = 22 + 3 characters. Edits: "sat"->"sit" (1), "the " deleted (4)
    # and "c " inserted (2).
    assert m["num_reference_characters"] == 25
    assert m["cer"] == pytest.approx(7 / 25)
    assert m["normalized"] is True


def test_word_accuracy_stays_non_negative_when_wer_exceeds_one():
    m = compute_detailed_wer_metrics("hello there big world", "hello")
    assert m["wer"] == pytest.approx(3.0)
    assert m["word_accuracy"] == 1.0


def test_sentence_accuracy_after_normalisation():
    predictions = ["Hello, world!", "good morning", "see you later"]
    references = ["hello world", "Good morning.", "see you soon"]
    m = compute_detailed_wer_metrics(predictions, references)
    assert m["sentence_accuracy"] == pytest.approx(2 / 3)
    assert compute_detailed_wer_metrics(predictions, references, normalize=False)["sentence_accuracy"] == 0.0


def test_confusions_come_from_the_alignment():
    predictions = ["the cat sit on mat", "we sit here", "a big dog sit"]
    references = ["the cat sat on the mat", "we sat here", "a dog sat down"]
    m = compute_detailed_wer_metrics(predictions, references)
    assert m["top_substitutions"][0] == {"reference": "sat", "prediction": "sit", "count": 3}
    assert {(d["word"], d["count"]) for d in m["top_deletions"]} == {("the", 1), ("down", 1)}
    assert m["top_insertions"] == [{"word": "big", "count": 1}]
    assert len(compute_detailed_wer_metrics(predictions, references, top_n=1)["top_deletions"]) == 1


def test_perfect_transcripts():
    m = compute_detailed_wer_metrics(["one two", "three"], ["one two", "three"])
    assert (m["wer"], m["cer"], m["word_accuracy"], m["sentence_accuracy"]) == (0.0, 0.0, 1.0, 1.0)
    assert m["top_substitutions"] == m["top_deletions"] == m["top_insertions"] == []


# --- errors and empty references -----------------------------------------------------------------------


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_wer(["a", "b"], ["a"])


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="no utterances"):
        compute_wer([], [])


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError, match=r"predictions\[1\]"):
        compute_wer(["a", None], ["a", "b"])


def test_empty_reference_with_a_prediction_names_the_index():
    with pytest.raises(ValueError, match="reference 1 is empty after normalisation"):
        compute_wer(["hello", "thank you"], ["hello", "Uh."])
    with pytest.raises(ValueError, match="reference 0 is empty"):
        compute_cer(["words"], ["   "], normalize=False)


def test_empty_reference_and_prediction_are_skipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="whisper_triton.metrics"):
        m = compute_detailed_wer_metrics([CAT_HYP, "", "um"], [CAT_REF, "", "uh"])
    assert "skipped 2 utterance(s)" in caplog.text and "[1, 2]" in caplog.text
    assert m["num_skipped_utterances"] == 2
    assert m["num_utterances"] == 1
    assert m["wer"] == pytest.approx(2 / 6)
    assert m["sentence_accuracy"] == 0.0  # the skipped pairs count neither for nor against it


def test_all_references_empty_is_an_error():
    with pytest.raises(ValueError, match="nothing to score"):
        compute_wer(["", "uh"], ["", "um"])


# --- evaluate_model and the report ---------------------------------------------------------------------

PREDICTIONS = [CAT_HYP, "Hello world", "", "a c b"]
REFERENCES = [CAT_REF, "hello, world!", "uh", "a b"]
IDS = ["cat", "hello", "silence", "ab"]


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def test_evaluate_model_writes_metrics_csv_and_plot(tmp_path):
    m = evaluate_model(PREDICTIONS, REFERENCES, tmp_path / "eval", ids=IDS)

    # 1 sub + 1 del in "cat", 1 insertion in "ab", over 6 + 2 + 2 reference words.
    assert m["wer"] == pytest.approx(3 / 10)
    assert m["sentence_accuracy"] == pytest.approx(1 / 3)
    assert m["num_skipped_utterances"] == 1
    with open(m["files"]["metrics_json"], encoding="utf-8") as f:
        assert json.load(f) == m

    rows = _read_csv(m["files"]["per_utterance_csv"])
    assert list(rows) == IDS
    cat = rows["cat"]
    assert cat["reference"] == CAT_REF and cat["prediction"] == CAT_HYP
    assert cat["normalized_reference"] == "the cat sat on the mat"
    assert (cat["num_reference_words"], cat["substitutions"], cat["deletions"], cat["insertions"]) == (
        "6", "1", "1", "0",
    )  # fmt: skip
    assert cat["errors"] == "2" and float(cat["wer"]) == pytest.approx(2 / 6)
    assert float(rows["ab"]["wer"]) == pytest.approx(1 / 2)
    assert rows["silence"]["wer"] == "" and rows["silence"]["normalized_reference"] == ""
    assert cat["duration_s"] == ""

    png = tmp_path / "eval" / "wer_by_length.png"
    assert m["files"]["wer_by_length_png"] == str(png)
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3  # decodes as an image, not just a header

    # Without durations the buckets are reference words: "hello world" and "a b" (2 words) in 1-5.
    buckets = {b["label"]: b for b in m["wer_by_length"]["buckets"]}
    assert m["wer_by_length"]["by"] == "reference_words"
    assert buckets["1-5 words"]["num_utterances"] == 2 and buckets["1-5 words"]["wer"] == pytest.approx(1 / 4)
    assert buckets["6-10 words"]["wer"] == pytest.approx(2 / 6)


def test_evaluate_model_buckets_by_duration(tmp_path):
    m = evaluate_model(PREDICTIONS, REFERENCES, tmp_path, ids=IDS, durations=[3.0, 0.0, 1.0, 45.5])
    assert m["wer_by_length"]["by"] == "duration_s"
    buckets = {b["label"]: b for b in m["wer_by_length"]["buckets"]}
    # The skipped "silence" clip is in no bucket; 45.5 s is beyond one 30-second window.
    assert buckets["0-5 s"]["num_utterances"] == 2
    assert buckets["0-5 s"]["wer"] == pytest.approx(2 / 8)
    assert buckets["> 30 s"]["wer"] == pytest.approx(1 / 2)
    assert set(buckets) == {"0-5 s", "> 30 s"}
    assert _read_csv(m["files"]["per_utterance_csv"])["ab"]["duration_s"] == "45.5"


def test_evaluate_model_checks_ids_and_durations(tmp_path):
    with pytest.raises(ValueError, match="1 ids for 4 utterances"):
        evaluate_model(PREDICTIONS, REFERENCES, tmp_path, ids=["x"])
    with pytest.raises(ValueError, match=r"bad at indices \[1\]"):
        evaluate_model(PREDICTIONS, REFERENCES, tmp_path, durations=[1.0, -2.0, 1.0, 1.0])


def test_report_contains_the_numbers(tmp_path):
    m = evaluate_model(PREDICTIONS, REFERENCES, tmp_path / "eval", ids=IDS)
    report = create_evaluation_report(m, tmp_path / "eval" / "report.md", title="tiny.en on samples")
    text = report.read_text(encoding="utf-8")

    assert text.startswith("# tiny.en on samples\n")
    assert "| Word error rate (WER) | 30.00 % |" in text
    assert "| Sentence accuracy (no word error) | 33.33 % |" in text
    assert "| Word accuracy (hits / reference words) | 80.00 % |" in text
    assert "| Substitutions | 1 | 10.00 % | 33.33 % |" in text
    assert "| sat | sit | 1 |" in text
    assert "![WER by utterance length](wer_by_length.png)" in text
    # Worst first: "ab" (50 %) before "cat" (33 %); perfect and skipped utterances are not listed.
    worst = text[text.index("## Worst utterances") :]
    assert worst.index("| ab |") < worst.index("| cat |")
    assert "| hello |" not in worst and "| silence |" not in worst


def test_report_links_the_plot_relative_to_itself(tmp_path):
    m = evaluate_model(PREDICTIONS, REFERENCES, tmp_path / "eval")
    text = create_evaluation_report(m, tmp_path / "reports" / "r.md").read_text(encoding="utf-8")
    assert "![WER by utterance length](../eval/wer_by_length.png)" in text


def test_report_from_detailed_metrics_without_files(tmp_path):
    m = compute_detailed_wer_metrics([CAT_HYP], [CAT_REF])
    text = create_evaluation_report(m, tmp_path / "r.md").read_text(encoding="utf-8")
    assert "| Word error rate (WER) | 33.33 % |" in text
    assert "| the | 1 |" in text  # the deleted word
    assert "## WER by utterance length" not in text and "## Worst utterances" not in text


def test_report_requires_the_headline_metrics(tmp_path):
    with pytest.raises(ValueError, match="sentence_accuracy"):
        create_evaluation_report({"wer": 0.1, "cer": 0.1, "word_accuracy": 0.9}, tmp_path / "r.md")


def test_report_goes_to_output_file_its_earlier_name_or_the_documents_default(tmp_path, monkeypatch):
    m = compute_detailed_wer_metrics([CAT_HYP], [CAT_REF])
    assert create_evaluation_report(m, output_file=tmp_path / "a.md") == tmp_path / "a.md"
    assert create_evaluation_report(m, output_path=tmp_path / "b.md") == tmp_path / "b.md"
    for name in ("a.md", "b.md"):
        assert "| Word error rate (WER) | 33.33 % |" in (tmp_path / name).read_text(encoding="utf-8")
    with pytest.raises(TypeError, match="not both"):
        create_evaluation_report(m, output_file=tmp_path / "c.md", output_path=tmp_path / "d.md")
    monkeypatch.chdir(tmp_path)
    default = create_evaluation_report(m)  # the API document's place for it
    assert default.resolve() == (tmp_path / "evaluation_results" / "evaluation_report.md").resolve()
    assert default.is_file()
