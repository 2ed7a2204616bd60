"""The README's bad-input table states only what a test checks (see tests/bad_input_table.py)."""

import bad_input_table
import pytest


@pytest.mark.parametrize("row", bad_input_table.ROWS, ids=lambda row: row[3].split("::")[1])
def test_each_row_is_checked_by_its_test(row):
    *_, node, asserted = row
    assert asserted in bad_input_table.test_source(node), f"{node} no longer checks {asserted!r}"


def test_readme_table_is_the_generated_one():
    section = bad_input_table.readme_section(bad_input_table.README.read_text())
    assert section == bad_input_table.render(), (
        "README's bad-input table is stale: python tests/bad_input_table.py --write"
    )
