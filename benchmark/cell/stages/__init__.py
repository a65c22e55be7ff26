"""The stage kinds of a cell, one module each. Every module says what its
job needs (its dependencies), what its config is (part of the store key)
and how it runs; `benchmark/cell.py` only composes them.

    training      train (f_C), attack (f_A)
    trigger       trigger preparation (a trigger with state), once per cell
    evaluate      f_C under f_A's trigger
    defense       f_D = defense(f_A) on the defender's clean subset
    bec           S(f_A, f_X)
    reactivation  reactivation (trigger + delta) and its gUAA control
    controls      noise robustness and feature CKA of OBA / RBA / gUAA

`context.CellContext` is what they share; `job.StageJob` / `job.Plan` the
graph. Results rows are assembled in `benchmark/rows.py`.
"""
