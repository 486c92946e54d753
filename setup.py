from setuptools import find_packages, setup

setup(
    name="dmi-tf",
    version="0.1.0",
    description="Diffusion Multi-Interest (DMI) retrieval and its baselines in TensorFlow",
    license="Apache-2.0",
    packages=find_packages(include=["dmi_tf", "dmi_tf.*", "export", "export.*",
                                    "serving", "serving.*"]),
    # The default run's config (python -m dmi_tf.train without --config).
    package_data={"dmi_tf": ["default.yaml"]},
    # Only 3.11 is tested; TensorFlow 2.20 wheels exist for it.
    python_requires=">=3.11,<3.12",
    install_requires=[
        # ScaNN 1.4.2's TF ops are built against TF 2.20 and fail to load under 2.21.
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "tensorflow-serving-api~=2.20.0",
        "tensorflow-recommenders==0.7.7",
        "scann[tf]==1.4.2",
        "numpy>=1.26",
        "pyyaml>=6.0",
        # serving.server's REST front end: a bounded worker pool fed by an asynchronous
        # reader (slow clients hold no thread), a listen backlog and a body-size limit.
        "waitress>=3.0",
    ],
    # hypothesis: tests/test_fuzz_serving.py generates random TensorProtos and JSON bodies;
    # parquet: python -m dmi_tf.predict --shard-format parquet (NumPy shards need nothing).
    extras_require={"test": ["pytest>=8", "ruff>=0.6", "hypothesis>=6.100"],
                    "parquet": ["pyarrow>=14"]},
)
