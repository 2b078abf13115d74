"""Every ingest kind is always listed; one whose optional dependency is missing says which
package to install when it runs, instead of vanishing from the verb."""

from __future__ import annotations

import subprocess
import sys

BLOCK_PYSAM = "import sys; sys.modules['pysam'] = None\n"   # as if pysam were not installed


def run_medmix(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_PYSAM + code], capture_output=True, text=True, timeout=120)


def test_every_kind_is_listed_without_pysam():
    done = run_medmix("from medmix.cli import main\nmain(['ingest', '--help'])")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<dicom|images|qa|medqa|medmcqa|pubmedqa|pad-ufes|conversations|hf|vqa-rad|slake|path-vqa|vindr-mammo|cbis-ddsm|mimic-notes|mimic-cxr|reports|variants|genotypes|volumes>" in done.stdout


def test_a_kind_without_its_dependency_names_the_package(tmp_path):
    done = run_medmix("from medmix.cli import main\n"
                      f"main(['ingest', 'variants', '--bam', 'r.bam', '--ref', 'r.fa', '--truth', 't.vcf', "
                      f"'--root', {str(tmp_path / 'store')!r}])")
    assert done.returncode != 0
    assert "medmix ingest variants needs the Python package 'pysam'" in done.stderr
    assert "pip install pysam" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists()   # nothing written


def test_hf_without_datasets_names_the_package(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['datasets'] = None\n"
                           "from medmix.cli import main\n"
                           f"main(['ingest', 'hf', 'medqa', {str(tmp_path)!r}, '--root', {str(tmp_path / 'store')!r}])"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "medmix ingest hf needs the Python package 'datasets'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "store").exists()
