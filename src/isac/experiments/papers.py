"""Papers whose figures `isac reproduce` regenerates, registered as their systems land.

Each entry lists bundled spec files under ``specs/<key>/``.
"""

from __future__ import annotations

from isac.experiments.reproduce import Paper, register_paper

register_paper(Paper(
    key="fang",
    title="003 Fang et al., sum rate vs CRLB beamforming (crlb-sumrate)",
    specs=("fig2_convergence.toml", "fig3_tradeoff.toml", "fig4_streams.toml", "table1_antennas.toml",
           "table1_antennas_ns0.toml", "fig6_users.toml", "fig7_power.toml"),
    notes=("Preset `fang` follows the authors' figure scripts (L = 30 snapshots; the text says 64). "
           "Fig. 5 (CPU time) is the cpu_time plot of fang_table1_antennas. FP-SGDA is not implemented."),
))

register_paper(Paper(
    key="zhao",
    title="004 Zhao et al., GNN with implicit projection for beampattern design (beampattern-sinr)",
    specs=("fig6_beampattern.toml", "fig7_beampattern.toml", "sinr_sweep.toml", "users_sweep.toml",
           "table2_grid.toml"),
    notes=("Figs. 6-7: fig6/fig7_beampattern; Fig. 8, Table III and Fig. 10: zhao_sinr_sweep; Figs. 9 and 11: "
           "zhao_users_sweep; Table II: zhao_table2_grid. The GNN and DNN models are trained first "
           "(`models/`, or `models-quick/` with small quick-mode training), one per (L, Gamma0) as in the paper."),
))
