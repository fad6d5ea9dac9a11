"""`aligner bench ...`: speed and quality measured side by side in one run, written as JSON."""
