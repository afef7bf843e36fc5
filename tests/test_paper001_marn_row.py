"""Paper 001 Table 2 (Q2) compares RMFN with MARN: the suite has the row, at RMFN's sizes."""

from emofusion.evaluation.suite import get_suite


def test_table2_has_marn_at_rmfn_sizes():
    for preset, hidden in (("quick", 16), ("full", 32)):
        spec = get_suite("paper001-table2", preset)
        cells = {c.row: c for c in spec.cells}
        marn, rmfn = cells["MARN"].config, cells["RMFN"].config
        assert marn["model"] == "marn" and rmfn["model"] == "rmfn"
        assert {k: v for k, v in marn.items() if k not in ("model", "model_options")} == {
            k: v for k, v in rmfn.items() if k not in ("model", "model_options")}  # same data and training
        o = marn["model_options"]
        assert o["hidden_dim"] == hidden and o["z_dim"] == rmfn["model_options"]["z_dim"]
        assert o["head_dim"] == rmfn["model_options"]["head_dim"] and o["attentions"] == 4
