"""The model (core): SE/CBAM attention, the AlexNet backbone with attention inserted, the FrEIA flow, AlexNet
weights and AttentDifferNet."""
