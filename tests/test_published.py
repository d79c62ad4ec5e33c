"""Published result tables (corelib.published, loaded from corelib/published.csv) and laying them beside one's own
(corelib.results).

The expected numbers below were read off the notes in the repository by hand: docs/method.md §8, §3.7 and
docs/baselines.md §1.8, §1b.5, §2.2, §3.7, §4.4. The tests here do not read those files;
tests/test_docs.py checks that every number of a record (that is, of a row of the data file) appears in the section
it cites.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import tomllib
from collections import Counter
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from corelib import published as P
from corelib import results as R
from corelib.errors import InvalidInputError, UnknownNameError


def _one(task, method, backbone=None, **fields):
    """The single record of ``method`` on ``task`` (with that backbone and fields, when given)."""
    found = [r for r in P.published_results(task) if r.method == method
             and (backbone is None or r.backbone == backbone) and all(getattr(r, k) == v for k, v in fields.items())]
    assert len(found) == 1, found
    return found[0]


def _scores(record):
    return (record.mAP, record.rank1, record.rank5, record.rank10)


# --- transcription spot checks -------------------------------------------------------------------------------------

def test_learn_by_guessing_rows_are_read_in_the_slides_order():
    # The slides print R-1 / R-5 / R-10 / mAP: "82.7 / 90.5 / 93.5 / 69.3".
    lbg = _one("market1501->dukemtmc", "Learn by Guessing")
    assert _scores(lbg) == (69.3, 82.7, 90.5, 93.5)
    assert lbg.backbone == "IBN-Net50-a" and lbg.setting == "uda"
    rerank = _one("dukemtmc->market1501", "Learn by Guessing + re-ranking")
    assert _scores(rerank) == (88.1, 92.0, 95.3, 96.6) and "re-ranking" in rerank.note
    assert _scores(_one("dukemtmc->market1501", "SSG")) == (68.7, 86.2, 94.6, 96.5)


def test_core_reid_v2_tables():
    assert _scores(_one("market1501->cuhk03np", "CORE-ReID V2")) == (66.4, 66.9, 83.4, 88.9)
    assert _scores(_one("cuhk03np->market1501", "CORE-ReID V1")) == (83.6, 93.6, 97.3, 98.7)
    assert _scores(_one("market1501->msmt17", "Direct transfer")) == (11.7, 30.2, 42.9, 48.0)
    assert _scores(_one("veri776->vehicleid@2400", "CORE-ReID V2 Tiny")) == (55.14, 45.99, 65.07, 73.54)
    assert _scores(_one("vehicleid->veriwild@5000", "CORE-ReID V2")) == (34.9, 70.2, 86.2, 89.3)
    main = _one("vehicleid->veri776", "CORE-ReID V2")
    assert (main.mAP, main.backbone, main.decimals) == (49.50, "ResNet101", 2)
    # The direct-transfer row the note calls a table error is kept as printed, with the caveat.
    sic = _one("cuhk03np->msmt17", "Direct transfer")
    assert _scores(sic) == (35.5, 63.3, 77.8, 82.7) and "sic" in sic.note
    # Ablations give mAP only; the approximate ones say so.
    secab = _one("veri776->vehicleid@800", "CORE-ReID V2 without SECAB")
    assert _scores(secab) == (65.14, None, None, None)
    assert "approximate" in _one("market1501->cuhk03np", "CORE-ReID V1 without ECAB").note
    assert _one("cuhk03np->market1501", "CORE-ReID V2 (K=700)").mAP == 82
    assert "undefined" in _one("vehicleid->veri776", "Baseline (V2 page)").note


def test_transreid_tables():
    best = _one("msmt17", "TransReID* (SIE camera)", "ViT-B/16 (384×128)", note="")
    assert _scores(best) == (69.4, 86.2, None, None) and best.setting == "supervised"
    # VehicleID columns are: no mAP.
    vid = _one("vehicleid@800", "TransReID* (SIE view)", "DeiT-B/16", note="")
    assert _scores(vid) == (None, 85.2, 97.6, None)
    # An empty cell of the paper's table ("–") is no record at all.
    assert not [r for r in P.published_results("occduke") if "384" in r.backbone]
    assert not [r for r in P.published_results("vehicleid@800") if "camera+view" in r.method]
    assert _one("msmt17", "Baseline with Adam").mAP == 37.4
    readme = _one("veri776", "TransReID*", "DeiT-B/16")
    assert (readme.mAP, readme.rank1) == (82.4, 97.1) and "reorganized" in readme.note
    ssl = _one("market1501->msmt17", "TransReID-SSL", "ViT-S/16+ICS (256×128)")
    assert (ssl.mAP, ssl.rank1) == (57.8, 79.5)
    again = _one("market1501->msmt17", "TransReID-SSL (reproduced)", "ViT-S/16+ICS (256×128)")
    assert (again.mAP, again.rank1) == (57.8, 79.4)
    assert _one("msmt17", "TransReID-SSL", "ViT-S/16 (256×128)", setting="usl").mAP == 40.9


def test_dbscan_family_and_ibn_tables():
    assert _scores(_one("market1501->dukemtmc", "MMT-700", "IBN-ResNet-50")) == (68.7, 81.8, 91.2, 93.4)
    assert _scores(_one("market1501->msmt17", "MMT-1500", "ResNet-50")) == (22.9, 49.2, None, None)
    quoted = _one("market1501->msmt17", "MMT")
    assert _scores(quoted) == (24.0, 50.1, 63.5, 69.3) and "discrepancy" in quoted.note
    spcl = _one("market1501->dukemtmc", "SpCL")
    assert _scores(spcl) == (68.8, 82.9, 90.1, 92.5) and "arXiv v1 only" in spcl.note
    assert _scores(_one("msmt17->market1501", "SpCL", "IBN-ResNet-50")) == (79.9, 92.0, 97.1, 98.1)
    assert _scores(_one("vehiclex->veri776", "SpCL")) == (38.9, 81.3, None, None)
    cc = _one("msmt17", "Cluster Contrast (InfoMap)")
    assert _scores(cc) == (31.2, 61.5, 71.8, 76.7) and cc.setting == "usl" and "no source domain" in cc.note
    assert {r.mAP for r in P.published_results("market1501", "Cluster Contrast", "usl")} >= {82.1, 82.6, 87.0}
    # The IBN-Net README prints "R1 (mAP)": 95.0 (88.2).
    ibn = _one("market1501", "reid-strong-baseline", "IBN-Net-a")
    assert (ibn.rank1, ibn.mAP) == (95.0, 88.2)
    assert (_one("dukemtmc", "reid-strong-baseline", "ResNet-50").mAP) == 76.4


def test_records_per_source_section():
    # Guards against a table lost or doubled while editing the data.
    counts = Counter(r.source.partition(":")[0] for r in P.PUBLISHED)
    assert counts == {"docs/method.md §8": 52, "docs/method.md §3.7": 4, "docs/baselines.md §1.8": 88,
                      "docs/baselines.md §1b.5": 28, "docs/baselines.md §2.2": 8, "docs/baselines.md §3.7": 72,
                      "docs/baselines.md §4.4": 4}


# --- the records' shape ----------------------------------------------------------------------------------------------

def test_every_record_is_complete_and_consistent():
    assert P.PUBLISHED and isinstance(P.PUBLISHED, tuple)
    for r in P.PUBLISHED:
        assert re.match(r"docs/(method|baselines)\.md §[\w.]+: \S", r.source), r
        metrics = [v for v in r.metrics.values() if v is not None]
        assert metrics and all(0 <= v <= 100 for v in metrics), r
        assert r.setting in P.SETTINGS
        # UDA tasks are source->target; USL and supervised ones name the dataset alone.
        assert ("->" in r.task) == (r.setting == "uda"), r
        assert P.canonical_task(r.task) == r.task


def test_no_duplicate_keys():
    keys = Counter(r.key for r in P.PUBLISHED)
    assert [k for k, n in keys.items() if n > 1] == []


def test_records_are_the_rows_of_the_packaged_data_file():
    # The file ships as package data and is read through importlib.resources, as an installed package reads it.
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert P.DATA_FILE in pyproject["tool"]["setuptools"]["package-data"]["corelib"]
    rows = list(csv.DictReader(resources.files("corelib").joinpath(P.DATA_FILE).open(encoding="utf-8")))
    assert len(rows) == len(P.PUBLISHED) == 256
    for row, r in zip(rows, P.PUBLISHED):
        assert (row["task"], row["setting"], row["method"], row["backbone"], row["note"], row["source"]) == \
            (r.task, r.setting, r.method, r.backbone, r.note, r.source)
        # scores as the source prints them: the text gives the value and the decimals, an empty cell None
        for field in P.METRIC_FIELDS:
            value = getattr(r, field)
            assert row[field] == ("" if value is None else f"{value:.{r.decimals}f}"), (r, field)


def test_malformed_data_rows_are_refused_naming_the_line():
    header = ",".join(P.COLUMNS)
    good = "market1501->cuhk03np,uda,X,,49.50,,,82,,docs/method.md §8: x"
    (record,) = P._read_records(f"{header}\n{good}\n")
    assert (record.mAP, record.rank1, record.rank10, record.decimals, record.backbone) == (49.5, None, 82.0, 2, "")
    with pytest.raises(InvalidInputError, match="line 3: score '66,4'"):
        P._read_records(f'{header}\n{good}\nmsmt17,usl,X,,"66,4",,,,,docs/method.md §8: x\n')
    with pytest.raises(InvalidInputError, match="line 2: 10 cells expected"):
        P._read_records(f"{header}\nmsmt17,usl,X,,66.4\n")
    with pytest.raises(InvalidInputError, match="header"):
        P._read_records(good)
    with pytest.raises(InvalidInputError, match="at least one metric"):
        P._read_records(f"{header}\nmsmt17,usl,X,,,,,,,docs/method.md §8: x\n")


def test_records_are_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.PUBLISHED[0].mAP = 1.0
    with pytest.raises(InvalidInputError, match="at least one metric"):
        P.PublishedResult("market1501", "x", None, None, None, None, source="docs/method.md §8: x")
    with pytest.raises(InvalidInputError, match="setting"):
        P.PublishedResult("market1501", "x", 1.0, None, None, None, source="docs/method.md §8: x", setting="semi")


# --- task names and look-ups -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias, canonical", [
    ("Market->CUHK03", "market1501->cuhk03np"),
    ("market1501->cuhk03np", "market1501->cuhk03np"),
    ("MARKET → CUHK03-NP", "market1501->cuhk03np"),
    ("CUHK03 → Market-1501", "cuhk03np->market1501"),
    ("Market→MSMT", "market1501->msmt17"),
    ("Duke -> Market", "dukemtmc->market1501"),
    ("VehicleID→VeRi-776", "vehicleid->veri776"),
    ("VeRi → VehicleID", "veri776->vehicleid@800"),  # the loader's default test size
    ("VeRi → VehicleID 2400", "veri776->vehicleid@2400"),
    ("veri776 → vehicleid (test_size=1600)", "veri776->vehicleid@1600"),  # a workbench pair label
    ("cuhk03np (subset=labeled) → market1501", "cuhk03np->market1501"),
    ("VehicleID→VERI-Wild 10000", "vehicleid->veriwild@10000"),
    ("vehicleid->veriwild large", "vehicleid->veriwild@10000"),
    ("MSMT17", "msmt17"),
    ("Occ-Duke", "occduke"),
    ("VehicleID small", "vehicleid@800"),
])
def test_task_aliases(alias, canonical):
    assert P.canonical_task(alias) == canonical
    assert P.published_results(alias) == P.published_results(canonical) != []


@pytest.mark.parametrize("task", ["Market->VeRi", "nowhere", "veri776->vehicleid 900", "vehicleid 800->veri776",
                                  "market->duke->msmt"])
def test_unknown_task_names_the_known_ones(task):
    with pytest.raises(UnknownNameError) as err:
        P.published_results(task)
    message = str(err.value)
    assert repr(task) in message and "known tasks:" in message
    assert "market1501->cuhk03np" in message and "veri776->vehicleid@1600" in message
    assert isinstance(err.value, KeyError)  # the error contract of corelib.errors


def test_filters():
    spcl = P.published_results(method="spcl")
    assert {r.method for r in spcl} == {"SpCL", "SpCL+ (OpenUnReID)"}
    usl = P.published_results("Market", setting="usl")
    assert usl and {r.setting for r in usl} == {"usl"}
    assert P.published_results("Market->CUHK03", method="MMT") == []  # both known, never together
    with pytest.raises(UnknownNameError, match="known methods"):
        P.published_results(method="no such method")
    with pytest.raises(InvalidInputError, match="valid settings"):
        P.published_results(setting="semi-supervised")
    assert "market1501->cuhk03np" in P.list_tasks("uda") and "msmt17" not in P.list_tasks("uda")
    assert "Learn by Guessing" in P.list_methods("Duke->Market")


# --- tables ----------------------------------------------------------------------------------------------------------

def test_published_table():
    table = R.published_table("Market->CUHK03")
    assert list(table.columns) == ["method", "backbone", "mAP", "R-1", "R-5", "R-10", "source", "note"]
    main = table[table.method == "CORE-ReID V2"].iloc[0]
    assert (main["mAP"], main["R-10"]) == (66.4, 88.9)
    assert math.isnan(table[table.method == "CORE-ReID V2 without SECAB"].iloc[0]["R-1"])
    several = R.published_table(method="SpCL")
    assert list(several.columns[:3]) == ["task", "setting", "method"]


def test_beside_published_lays_measured_rows_next_to_the_paper():
    own = {"CORE-ReID V2 (ours)": {"mAP": 60.25, "R-1": 61.0, "rank5": 80.0, "R10": None}}
    table = R.beside_published(own, "Market→CUHK03")
    assert list(table.columns) == ["method", "backbone", "kind", "mAP", "R-1", "R-5", "R-10", "source", "note"]
    assert set(table["kind"]) == {"measured", "paper"}
    ours = table[table.kind == "measured"]
    assert list(ours["method"]) == ["CORE-ReID V2 (ours)"]
    assert list(ours.iloc[0][["mAP", "R-1", "R-5", "R-10"]]) == ["60.2", "61.0", "80.0", "–"]
    paper = table[(table.kind == "paper") & (table.method == "CORE-ReID V2")].iloc[0]
    assert list(paper[["mAP", "R-1", "R-5", "R-10"]]) == ["66.4", "66.9", "83.4", "88.9"]
    assert table.iloc[-1]["kind"] == "measured"  # published rows first, ours last

    numbers = R.beside_published(own, "market1501->cuhk03np", formatted=False, source=False, notes=False)
    assert "source" not in numbers.columns and "note" not in numbers.columns
    assert numbers[numbers.kind == "measured"].iloc[0]["mAP"] == 60.25
    assert math.isnan(numbers[numbers.kind == "measured"].iloc[0]["R-10"])
    assert numbers[numbers.method == "CORE-ReID V2"].iloc[0]["R-1"] == 66.9

    # One score mapping alone is named by the label; vehicle rows keep the paper's two decimals.
    vehicle = R.beside_published({"mAP": 48.0, "R-1": 79.1}, "VehicleID->VeRi", label="ours")
    assert vehicle[vehicle.method == "CORE-ReID V2"].iloc[0]["mAP"] == "49.50"
    assert list(vehicle[vehicle.kind == "measured"].iloc[0][["method", "mAP"]]) == ["ours", "48.00"]


def test_beside_published_renders_with_to_latex():
    table = R.beside_published({"ours": {"mAP": 44.0, "R-1": 70.0}}, "Market->MSMT")
    tex = R.to_latex(table, caption="Market → MSMT17", label="tab:msmt")
    assert "nan" not in tex
    assert r"ours &  & measured & 44.0 & 70.0 & – & – &  &  \\" in tex  # empty source and note
    assert r"CORE-ReID V2 & ResNet101 & paper & 44.1 & 71.3 & 82.4 & 86.0 &" in tex
    assert "TransReID-SSL" in tex and r"\label{tab:msmt}" in tex


def test_every_task_renders_as_latex_can_print_it():
    # No "nan", and no character LaTeX would choke on in any method, backbone, source or note.
    for task in P.list_tasks():
        tex = R.to_latex(R.beside_published(None, task))
        assert "nan" not in tex, task
        # to_latex escapes _ & % → ·, and nothing else: the text must hold no other LaTeX specials ...
        texts = [r.method + r.backbone + r.source + r.note for r in P.published_results(task)]
        assert not [t for t in texts if re.search(r"[#^$~{}\\≈]", t)], task
        # ... and no character outside what LaTeX's utf8 input handles without extra packages.
        assert set(re.findall(r"[^\x00-\x7f]", tex)) <= {"×", "–", "§"}, task


def _collected(task_labels):
    """A collect_results-like frame: runs a and b on each task, adapted and direct stages."""
    rows = []
    for task in task_labels:
        for run, mAP in (("a", 40.0), ("b", 42.5)):
            rows.append({"run": run, "pair": "p", "task": task, "stage": "adapted", "epoch": 2, "mAP": mAP,
                         "R-1": 60.0, "R-5": 70.0, "R-10": 75.0})
            rows.append({"run": run, "pair": "p", "task": task, "stage": "direct", "epoch": 4, "mAP": 5.0,
                         "R-1": 10.0, "R-5": 20.0, "R-10": 30.0})
    return pd.DataFrame(rows)


def test_beside_published_reads_pair_table_and_collect_results():
    results = _collected(["market1501 → msmt17", "vehicleid → veri776"])
    pairs = R.pair_table(results)
    table = R.beside_published(pairs, "Market->MSMT", formatted=False)
    ours = table[table.kind == "measured"]
    assert list(ours["method"]) == ["ours (measured), a", "ours (measured), b"]
    assert list(ours["mAP"]) == [40.0, 42.5] and list(ours["R-10"]) == [75.0, 75.0]
    assert (table.kind == "paper").sum() == len(P.published_results("market1501->msmt17"))

    direct = R.beside_published(results, "VehicleID->VeRi", stage="direct", formatted=False)
    assert list(direct[direct.kind == "measured"]["mAP"]) == [5.0, 5.0]

    # A single embedded pair stands for the task the caller names; one run is named by the label.
    embedded = R.pair_table(_collected(["market_like → cuhk_like"]).query("run == 'a'"))
    demo = R.beside_published(embedded, "Market->CUHK03", label="demo (embedded)")
    assert list(demo[demo.kind == "measured"][["method", "mAP"]].iloc[0]) == ["demo (embedded)", "40.0"]

    with pytest.raises(InvalidInputError, match="tasks"):
        R.beside_published(pairs, "Market->CUHK03")  # neither of the table's tasks
    with pytest.raises(InvalidInputError, match="tasks"):
        R.beside_published(R.pair_table(_collected(["vehicleid → veri776"])), "Market->CUHK03")  # another task


def test_beside_published_refuses_what_it_cannot_read():
    with pytest.raises(UnknownNameError, match="known tasks"):
        R.beside_published({"ours": {"mAP": 1.0}}, "Market->VeRi")
    with pytest.raises(InvalidInputError, match="unknown metric"):
        R.beside_published({"ours": {"mAP": 1.0, "top-3": 2.0}}, "Market->CUHK03")
    with pytest.raises(InvalidInputError, match="not a number"):
        R.beside_published({"ours": {"mAP": "66.4%"}}, "Market->CUHK03")
    with pytest.raises(InvalidInputError, match="mapping"):
        R.beside_published({"ours": 66.4, "theirs": {"mAP": 1.0}}, "Market->CUHK03")
    with pytest.raises(InvalidInputError, match="columns"):
        R.beside_published(pd.DataFrame({"x": [1.0]}), "Market->CUHK03")
