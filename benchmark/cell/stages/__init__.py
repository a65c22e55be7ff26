"""The stage kinds of a cell, one module each. Every module says what its
job needs (its dependencies), what its config is (part of the store key)
and how it runs; `benchmark/cell/cell.py` only composes them.

    training      train (f_C), attack (f_A): the classifier family's
    trigger       trigger preparation (a trigger with state), once per cell
    clip_training train (f_C), attack (f_A): the CLIP family's
    evaluate      f_C under f_A's trigger
    defense       f_D = defense(f_A) on the defender's data (the family's)
    bec           S(f_A, f_X)
    reactivation  reactivation (trigger + delta) and its gUAA control
    controls      noise robustness and feature CKA of OBA / RBA / gUAA

`benchmark/cell/context.CellContext` is what they share;
`benchmark/cell/job.py` (StageJob, Plan) the graph. Results rows are assembled in `benchmark/cell/rows.py`.
"""
