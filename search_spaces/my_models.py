"""Your own Keras model: the keras-tuner-style `build(hp)` that search_spaces/custom_model.yaml names
(`model: {family: custom, build: "my_models:build"}`).

`hp` holds the trial's grid values (hp.get("dropout_rate"), hp.get("hidden_units") as "64-32", ...), its seed, and
the data's sizes (n_features, n_classes, n_outputs). Return a compiled model: the study fits it like any other.
"""

import keras


def build(hp):
    widths = [int(w) for w in str(hp.get("hidden_units")).split("-")]
    inputs = keras.Input(shape=(hp.get("n_features"),))
    x = keras.layers.Dropout(hp.get("input_dropout"))(inputs)
    for width in widths:
        x = keras.layers.Dense(width, activation=hp.get("activation"))(x)
        x = keras.layers.Dropout(hp.get("dropout_rate"))(x)
    if hp.get("n_classes") == 2:  # one sigmoid unit on a 0/1 label column
        outputs, loss = keras.layers.Dense(1, activation="sigmoid")(x), "binary_crossentropy"
    else:  # a softmax over integer class labels
        outputs = keras.layers.Dense(hp.get("n_classes"), activation="softmax")(x)
        loss = "sparse_categorical_crossentropy"
    model = keras.Model(inputs, outputs, name="my_mlp")
    model.compile(optimizer=keras.optimizers.Adam(hp.get("learning_rate")), loss=loss, metrics=["accuracy"])
    return model
