from datetime import datetime

import pytest

from pipeline.data.classspec import load_class_spec, shipped_class_specs


def test_shipped_specs_cover_the_14_devices_of_the_paper():
    assert {"ntif", "plus"} <= set(shipped_class_specs())
    ntif, plus = load_class_spec("ntif"), load_class_spec("plus")
    assert len(ntif.devices) == 10 and len(plus.devices) == 4
    # five pairs of identical models: two bodies of one model are two devices
    models = [d.model for d in ntif.devices.values()]
    assert all(models.count(m) == 2 for m in models)
    for dev in ntif.devices.values():
        assert [(c.label, c.first_slot, c.last_slot) for c in dev.classes] == [(0, 1, 5), (1, 20, 25)]


@pytest.mark.parametrize("device,when,label", [
    ("PLUS-nikon01", datetime(2005, 10, 1, 0, 0), 0),
    ("PLUS-nikon01", datetime(2006, 2, 28, 23, 59), 0),   # a month bound covers the whole month
    ("PLUS-nikon01", datetime(2006, 3, 1, 0, 0), None),
    ("PLUS-nikon01", datetime(2020, 10, 31, 12, 0), 1),
    ("PLUS-canon01", datetime(2008, 7, 1), 0),
    ("PLUS-pentax02", datetime(2021, 2, 14), 1),
])
def test_plus_date_ranges(device, when, label):
    spec = load_class_spec("plus")
    got, reason = spec.label_for(device, timeslot=None, captured_at=when)
    assert got == label
    assert (reason == "") == (label is not None)


def test_ntif_slots_outside_classes_have_a_reason():
    spec = load_class_spec("ntif")
    assert spec.label_for("NTIF-canon01", timeslot=3, captured_at=None) == (0, "")
    assert spec.label_for("NTIF-canon01", timeslot=25, captured_at=None) == (1, "")
    label, reason = spec.label_for("NTIF-canon01", timeslot=12, captured_at=None)
    assert label is None and "slot 12" in reason
    label, reason = spec.label_for("NTIF-canon01", timeslot=None, captured_at=datetime(2015, 1, 1))
    assert label is None and "timeslot" in reason


def test_malformed_specs_name_the_entry(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('time_axis = "timeslot"\n[devices.X]\nclasses = [{ label = 0, slots = [5, 1] }]\n')
    with pytest.raises(ValueError, match=r"devices\.X\.classes\[0\].*first <= last"):
        load_class_spec(bad)
    bad.write_text('[devices.X]\nclasses = [{ label = 0, start = "2014-13", end = "2015-01" }]\n')
    with pytest.raises(ValueError, match="cannot parse|month"):
        load_class_spec(bad)
    with pytest.raises(FileNotFoundError, match="ntif"):
        load_class_spec("no-such-spec")
