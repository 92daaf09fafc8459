"""Training runs of models with a fed-back input show and score what they generate."""


import seqgraph as sg
from seqgraph.ir import node_of
from seqgraph.parts import compile_part
from seqgraph.train.generation import decode_dataset
from seqgraph.train.run import run


def _train(model_file, tmp_path, *settings):
    lines = []
    trainer = run(model_file, epochs=1, out=str(tmp_path), sizes={"hidden": 12}, progress=False,
                  settings=["examples = 300", "batch = 20", *settings], echo=lines.append)
    return trainer, lines


def test_seq2seq_prints_pairs_and_scores_generated_outputs(tmp_path):
    trainer, lines = _train("models/seq2seq_attention.sg", tmp_path, "show = 2")
    pairs = [line for line in lines if "  ->  " in line]
    assert len(pairs) == 2
    row = trainer.history[-1]
    decoded = decode_dataset(trainer.net, trainer.valid_data, "tgt_out")
    assert row["generated_exact_match"] == decoded.exact_match()
    assert row["generated_token_accuracy"] == decoded.token_accuracy()
    summary = next(line for line in lines if "generated exact match" in line)
    assert f"token accuracy {decoded.token_accuracy():.3f} on 30 examples" in summary


def test_captioner_prints_captions_of_held_out_images(tmp_path):
    trainer, lines = _train("models/cnn_lstm.sg", tmp_path)
    captions = [line for line in lines if line.startswith("  example ")]
    assert len(captions) == 3
    letters = set("abcdefghijklmnopqrstuvwxyz?")
    for line in captions:
        caption = line.split("  ->  ")[1].split("   (")[0]
        assert set(caption) <= letters and 1 <= len(caption) <= 6


def test_show_zero_is_silent(tmp_path):
    trainer, lines = _train("models/seq2seq_attention.sg", tmp_path, "show = 0")
    assert not any("  ->  " in line for line in lines)
    assert "generated_exact_match" not in trainer.history[-1]


def test_a_part_keeps_the_order_of_the_model_nodes():
    model = sg.load("models/cnn_lstm.sg").model()
    feat = next(n for n in model.graph if node_of(model.graph, n).op == "tanh")
    part = compile_part(model, {"feat": feat})
    assert list(part.graph) == [n for n in model.graph if n in part.graph]
    assert len(part.graph) < len(model.graph) / 2
