"""One frozen-dataclass config per experiment (every field a flag through
`qstar_jax.configs`); `main.MainConfig` is the main job's."""
