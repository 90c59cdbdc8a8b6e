"""Exercise mode: check a student's sample_xt, sample (Algorithm 2) and train (Algorithm 1) and name the mistake.

    report = ddpm.exercise.check_function("sample_xt", my_sample_xt)      # or "sample", "train", "train_classconditional"
    report.passed, report.mistake (an id of MISTAKES, or None), report.message

Each item has a challenge: fixed, seeded inputs stored beside this file (challenges/*.safetensors, T = 1000 and T = 100,
t = 0 and T-1 included), and for sampling a model whose eps_theta is exact (models.py), so Algorithm 2 has a
reference without a trained network. A check compares the student's outputs with the reference and with the
catalogue MISTAKES; stochastic parts (the student's own noise, training) are judged by tests whose false-alarm rate
each module states. Outputs computed anywhere can be checked without running code: challenge_files(item) is the file
to download, check_outputs(item, uploaded_bytes_or_path) reads an .npz or .safetensors upload safely, and
render_report(report) draws the student's images beside the reference.

    mistakes.py   the catalogue: id, the mistake in the sheet's notation, its effect, the line that fixes it
    challenge.py  the challenge files: build, write, load, challenge_files
    models.py     the exact eps_theta of a few images, and the DDPM the student's sample runs on
    forward.py    sample_xt against Eq. (4)           reverse.py   sample against Algorithm 2
    training.py   train against Algorithm 1           upload.py    reading uploads safely
    report.py     Report and its picture              check.py     check_function, check_outputs
"""
from .challenge import UPLOAD_ITEMS, challenge_files, upload_instructions
from .check import ITEMS, SIGNATURES, check_function, check_outputs, expected_arrays, solution_outputs
from .mistakes import MISTAKES, Mistake
from .models import sampling_model
from .report import Report, render_report
from .upload import UploadError

__all__ = ["ITEMS", "MISTAKES", "Mistake", "Report", "SIGNATURES", "UPLOAD_ITEMS", "UploadError", "challenge_files",
           "check_function", "check_outputs", "expected_arrays", "render_report", "sampling_model", "solution_outputs",
           "upload_instructions"]
