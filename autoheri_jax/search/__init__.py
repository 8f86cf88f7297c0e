"""The one-shot architecture search: relaxed edge gates and their entropy (gates.py), the
discrete architecture derived from them, its record and rendering (architecture.py), and the
aging-evolution baseline over edge masks (evolution.py)."""
