"""Analysis: reads only the results store (never TensorFlow) and turns a study into tables, figures, a report."""
