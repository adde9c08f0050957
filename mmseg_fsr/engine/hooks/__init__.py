from .fsr_teacher_hook import FSRTeacherHook  # noqa: F401
