"""A recorder's records read back as the export side reads them (``ranges.Range.from_record``): the C step post
appends the steady decode's ``engine.step`` range as raw values (``steps.facts.RAW_STEP``), every other record as the
hook made it."""
from vllm_w2ext.steps.facts import expand_raw_step


def listed(records: list) -> list:
    return [expand_raw_step(r) if type(r) is bytes else r for r in records]
