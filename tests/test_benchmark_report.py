"""The CPU benchmark's report keeps one section per machine: a run replaces its own CPU's
section and leaves every other machine's as it was."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_vs_torch  # noqa: E402

INTEL = {"vendor": "GenuineIntel", "cpu": "Intel(R) Xeon(R) Processor"}
AMD = {"vendor": "AuthenticAMD", "cpu": "AMD EPYC"}


def test_a_run_replaces_only_its_own_machine_s_section(tmp_path):
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nintroduction\n")
    cpu_vs_torch.write_section(report, "## Intel, first run", cpu_vs_torch.machine_markers(INTEL))
    cpu_vs_torch.write_section(report, "## AMD, first run", cpu_vs_torch.machine_markers(AMD))
    cpu_vs_torch.write_section(report, "## AMD, second run", cpu_vs_torch.machine_markers(AMD))
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nintroduction\n")
    assert "## Intel, first run" in text and "## AMD, second run" in text and "AMD, first run" not in text
    assert text.index("Intel, first run") < text.index("AMD, second run")
    assert text.count("cpu_vs_torch.py authenticamd-amd-epyc: start") == 1


def test_the_markers_name_vendor_and_model():
    assert cpu_vs_torch.machine_markers(INTEL)[0] == "<!-- cpu_vs_torch.py genuineintel-intel-r-xeon-r-processor: start -->"
    assert cpu_vs_torch.machine_markers(AMD) != cpu_vs_torch.machine_markers(INTEL)


def test_the_intel_section_of_the_report_is_there_under_its_markers():
    text = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    start, end = cpu_vs_torch.machine_markers(INTEL)
    assert text.count(start) == 1 and text.index(start) < text.index(end)
    assert "## Intel(R) Xeon(R) Processor (GenuineIntel), 2 cores" in text.split(start)[1].split(end)[0]


def test_the_contention_section_states_each_slowdown_and_the_verdict(tmp_path):
    import argparse

    import contention
    rows = [("seqgraph lstm", 20.0, 30.0, "2", "2"), ("seqgraph lstm, KMP_BLOCKTIME=200", 20.0, 90.0, "2", "2"),
            ("seqgraph lstm, SEQGRAPH_THREADS=auto", 20.0, 32.0, "2", "1"), ("torch nn.LSTM", 25.0, 100.0, "2", "2")]
    info = {**INTEL, "cores": 2, "products": "MKL", "torch": "2.x"}
    args = argparse.Namespace(steps=12, warmup=3, rounds=3, quick=False)
    text = contention.report(rows, info, args, (0.1, 1.2), 95.0)
    assert "| seqgraph lstm | 2 / 2 | 20.0 | 30.0 | 1.50x | 102,400 | 68,267 |" in text
    assert "| seqgraph lstm, SEQGRAPH_THREADS=auto | 2 / 1 | 20.0 | 32.0 | 1.60x |" in text
    assert "slowed 1.50x beside the busy process, no worse than PyTorch's 4.00x" in text
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n")
    cpu_vs_torch.write_section(report, text, contention.MARKERS)
    cpu_vs_torch.write_section(report, text.replace("30.0", "31.0"), contention.MARKERS)
    written = report.read_text()
    assert written.startswith("# Benchmarks\n") and written.count(contention.MARKERS[0]) == 1 and "31.0" in written


def test_a_comparison_against_a_revision_sets_each_contestant_beside_its_twin():
    import argparse

    Round, Config = cpu_vs_torch.Round, cpu_vs_torch.Config
    lstm = Config("lstm", 256, [Round({"seqgraph lstm": 30e-3, "seqgraph lstm @ abc": 33e-3,
                                       "torch nn.LSTM": 33e-3}, 0.5, 0.0)] * 3)
    cells = Config("cells", 128, [Round({"seqgraph lstm": 10e-3, "seqgraph lstm @ abc": 10e-3,
                                         "seqgraph PeepholeLSTM": 12e-3, "seqgraph PeepholeLSTM @ abc": 11e-3},
                                        0.5, 0.0)] * 3)
    result = cpu_vs_torch.Result(2, [lstm, cells], {}, {}, 1.0)
    args = argparse.Namespace(against="abc", max_others=0.1, rounds=3, repeat=3)
    text = cpu_vs_torch.comparison([result], {**AMD, "cores": 2, "products": "MKL"}, args, 12.0)
    assert "| lstm 256 | seqgraph lstm | 30.0 | 33.0 | 0.91 | 0.91 | 1.00 |" in text
    assert "| cells 128 | seqgraph lstm | 10.0 | 10.0 | 1.00 | — | — |" in text  # the cells' own reference
    assert "| cells 128 | seqgraph PeepholeLSTM | 12.0 | 11.0 | 1.09 | 1.20 | 1.10 |" in text
    assert "- met: lstm 256, 2 threads, seqgraph lstm: 0.91x its time at abc" in text
    assert "- met: cells 128, 2 threads, seqgraph lstm: 1.00x its time at abc" in text
    assert "- **not met**: cells 128, 2 threads, seqgraph PeepholeLSTM: 1.09x its time at abc" in text
    assert "3 kept per row, each contestant timed over 3 steps in a row per round, the least kept" in text
    assert cpu_vs_torch.machine_markers(AMD, "against")[0] == "<!-- cpu_vs_torch.py authenticamd-amd-epyc against: start -->"
