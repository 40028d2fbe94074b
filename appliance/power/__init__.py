"""Power: UPS, battery monitor, NUT, the board's own battery; the policy that
acts before the power runs out."""
