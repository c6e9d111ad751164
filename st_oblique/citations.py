"""BibTeX entries of the work st-oblique implements, cited by its losses, builders and model cards."""

PAPER_CITATION = """@article{sun2022design,
    title={Design of the topology for contrastive visual-textual alignment},
    author={Sun, Zhun},
    journal={arXiv preprint arXiv:2209.02127},
    year={2022}
}"""
"""Sun, "Design of the topology for contrastive visual-textual alignment" (arXiv 2209.02127): the oblique manifold."""

SPARO_CITATION = """@inproceedings{vani2024sparo,
    title={Sparo: Selective Attention for Robust and Compositional Transformer Encodings for Vision},
    author={Vani, Ankit and Nguyen, Bac and Lavoie, Samuel and Krishna, Ranjay and Courville, Aaron},
    booktitle={European Conference on Computer Vision (ECCV)},
    year={2024}
}"""
"""Sparo (Vani et al., ECCV 2024, arXiv 2404.15721): the same geometry with attention slots and the mean of the cosines."""

SIGLIP_CITATION = """@inproceedings{zhai2023sigmoid,
    title={Sigmoid Loss for Language Image Pre-Training},
    author={Zhai, Xiaohua and Mustafa, Basil and Kolesnikov, Alexander and Beyer, Lucas},
    booktitle={Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
    pages={11975--11986},
    year={2023}
}"""
"""SigLIP's pairwise sigmoid loss."""

MATRYOSHKA_CITATION = """@misc{kusupati2024matryoshka,
    title={Matryoshka Representation Learning},
    author={Aditya Kusupati and Gantavya Bhatt and Aniket Rege and Matthew Wallingford and Aditya Sinha and Vivek Ramanujan and William Howard-Snyder and Kaifeng Chen and Sham Kakade and Prateek Jain and Ali Farhadi},
    year={2024},
    eprint={2205.13147},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}"""
"""Matryoshka representation learning (nested prefixes of an embedding)."""

GRADCACHE_CITATION = """@misc{gao2021scaling,
    title={Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup},
    author={Luyu Gao and Yunyi Zhang and Jiawei Han and Jamie Callan},
    year={2021},
    eprint={2101.06983},
    archivePrefix={arXiv},
    primaryClass={cs.LG}
}"""
"""GradCache: contrastive batches larger than memory."""
