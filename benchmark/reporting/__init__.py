"""Everything a grid's results become: the results table and summary
(`report`, with `tables` for the row order and statistics they share), the
figures (`figures`), a defense's leaderboard (`ranking` ranks the defenses,
`leaderboard` writes the ranking out), the capacity ladder's claims and
results page (`reproduction`, `results_page`), and Weights & Biases:
per-stage runs and the summary run (`wandb_logging`), its charts
(`wandb_charts`), the workspace and report (`wandb_dashboard`); and the
cell table on the terminal (`console`)."""
