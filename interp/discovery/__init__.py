"""Automatic circuit discovery on edges: the edge graph (`graph`), the edge-patched forward
(`forward`), EAP and EAP-IG scores (`scores`), searches and faithfulness curves (`search`)."""
