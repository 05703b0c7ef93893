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

register_paper(Paper(
    key="li",
    title="000 Li et al., LLM-enabled user association and multi-BS ISAC beamforming (multibs-association)",
    specs=("fig4_5_beampattern.toml", "fig6_convergence.toml", "fig7_users.toml", "fig8_antennas.toml",
           "fig9_power.toml", "fig10_crb.toml", "fig10_crb_binding.toml", "table3_large.toml"),
    notes=("Figs. 4-5: li_fig4_5_beampattern (fixed = Fig. 4 'Beamforming only', exact = Fig. 5); Fig. 6: "
           "li_fig6_convergence; Figs. 7, 8, 9: li_fig7_users, li_fig8_antennas, li_fig9_power; Fig. 10: li_fig10_crb "
           "(the paper's epsilon, where our CRB does not bind) and li_fig10_crb_binding (1e-7 ... 1e-3 rad^2); "
           "Table 3: li_table3_large. Baselines: brute-force = 'Convex plus BF' (same optimum of (P2) as exact), "
           "gale-shapley = 'Convex method only', fixed = 'Beamforming only'. The paper's proposal (an LLM "
           "associating users, 'Convex plus GPT-o1') is -o association=llm on any OpenAI-compatible "
           "server (not run by the bundled specs: it needs one); exact is its ceiling."),
))

register_paper(Paper(
    key="xu",
    title="001 Xu et al., joint receiving-BS selection, user association and beamforming (bs-selection)",
    specs=("table2_fig2.toml", "fig3_4_sinr.toml", "rcs_sensitivity.toml"),
    notes=("Table II / Fig. 2: xu_table2_fig2; Figs. 3 and 4: xu_fig3_4_sinr (power over feasible instances, "
           "feasibility rate); the RCS is not given by the paper: xu_rcs_sensitivity. `exhaustive` is the "
           "certified global optimum that every method is compared against. The paper's Table II and figures "
           "are not in our copy: the reports quote its claims."),
))

register_paper(Paper(
    key="lian",
    title="002 Lian et al., LHGNN beamforming for cooperative localisation and communication (coop-localization)",
    specs=("fig7_8_power.toml", "fig9_csi.toml", "fig10_position.toml", "tradeoff.toml"),
    notes=("Figs. 7-8: lian_fig7_8_power; Fig. 9: lian_fig9_csi; Fig. 10: lian_fig10_position; lian_tradeoff "
           "(ours) shows where the SPEB constraint costs rate. gamma = 2x the SPEB floor. SRW (from a paper we "
           "do not have) is stood in for by sca-sdr. The learned methods run the shipped models (reduced "
           "training protocol, see isac/learning/weights/README.md); models trained with the paper's protocol "
           "(`isac train lian-lhgnn --full --device cuda`) are used instead when their folder is in $ISAC_MODEL_DIR. "
           "The paper prints no numbers: the reports state its claims and whether ours agree."),
))
