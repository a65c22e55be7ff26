"""What the benchmark measures, as functions of models and data (no stage,
no store): ASR / RA / DER (`metrics`), linear CKA (`cka`), BEC's channel
ranking and backdoor similarity (`bec`), forward-hook feature capture
(`features`), the noise-robustness and feature-CKA controls (`controls`),
and the statistics over seeds every report reads (`intervals`)."""
