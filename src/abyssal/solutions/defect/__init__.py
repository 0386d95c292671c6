"""Visual defect inspection: ResNet-50 transfer learning, focal loss, few-shot training,
Grad-CAM explanations and INT8 edge inference (see :mod:`abyssal.solutions.defect.solution`)."""
