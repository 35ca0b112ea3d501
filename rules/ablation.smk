# Fig. 3's ablation on its own schedule (ablation.batch_size/epochs): its own models, evaluated on the
# confusion attack alone. Absent when the schedule is the main one (Fig. 3 then reads the main models).


if ABLATION.own:

    use rule train as train_ablation with:
        output:
            weights=model_path("weights.pt", ABLATION.dir),
            history=model_path("history.parquet", ABLATION.dir),
            run=model_path("run.json", ABLATION.dir),
        log:
            f"results/logs/{ABLATION.tag}/train/{{seed}}/{{method}}/{{arch}}.log",
        benchmark:
            f"results/benchmarks/{ABLATION.tag}/train/{{seed}}/{{method}}/{{arch}}.tsv"
        resources:
            gpu=gpu_count,
            mem_mb=job_mem_mb("train"),
            runtime=job_runtime("train", ablation=True),
        params:
            training=training_params(ablation=True),
            pretrained=config["models"]["pretrained"],
            checkpoint=f"results/checkpoints/{ABLATION.tag}/{{seed}}/{{method}}/{{arch}}.pt",

    use rule evaluate as evaluate_ablation with:
        input:
            weights=model_path("weights.pt", ABLATION.dir),
            test=cache_input("test"),
        output:
            metrics=f"{ABLATION.dir}/metrics/models/{{seed}}/{{method}}/{{arch}}.parquet",
            predictions=f"{ABLATION.dir}/predictions/{{seed}}/{{method}}/{{arch}}.parquet",
            run=f"{ABLATION.dir}/metrics/models/{{seed}}/{{method}}/{{arch}}.run.json",
        log:
            f"results/logs/{ABLATION.tag}/evaluate/{{seed}}/{{method}}/{{arch}}.log",
        benchmark:
            f"results/benchmarks/{ABLATION.tag}/evaluate/{{seed}}/{{method}}/{{arch}}.tsv"
        resources:
            gpu=gpu_count,
            mem_mb=job_mem_mb("evaluate_ablation"),
            runtime=job_runtime("evaluate_ablation"),
        params:
            # Fig. 3 needs the clean pass and the confusion attack only.
            attacks={PLAN.confusion_attack: PLAN.attacks[PLAN.confusion_attack]},
            corruptions=[],
            batch_size=config["evaluation"]["batch_size"],
            adversarial_dir=None,

    use rule aggregate as aggregate_ablation with:
        input:
            metrics=model_files(
                f"{ABLATION.dir}/metrics/models/{{seed}}/{{method}}/{{arch}}.parquet",
                ABLATION.models,
            ),
        output:
            metrics=f"{ABLATION.dir}/metrics.parquet",
        log:
            f"results/logs/{ABLATION.tag}/aggregate.log",
