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
