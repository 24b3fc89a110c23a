"""Networks: the bird's-eye-view student (``student.py``) and, later, the point-based teacher."""
