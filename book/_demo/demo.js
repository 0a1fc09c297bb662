// The live demo: draw (or upload) a digit, and the book's CNN reads it in the browser.
//
// The picture goes through MnistPreprocess (preprocess.js, the browser's copy of
// mnist_tutorial.predict.preprocess_image), and the 28x28 result through the ONNX export of the
// shipped model (`python -m mnist_tutorial export-onnx`), run by onnxruntime-web on one CPU thread.
// Exported with `--inside`, the model also returns each conv block's maps and each 7x7 position's
// contribution to each digit's logit, and the page shows them; a plain export shows the probabilities
// only. Nothing leaves the page. window.mnistDemo lets the browser tests drive and read it.
(function () {
  "use strict";

  const script = document.currentScript.src;
  const demoBase = script.replace(/[^/]*$/, "");
  const vendorBase = demoBase.replace(/_demo\/$/, "_vendor/");
  const PEN_WIDTH = 18;
  const INPUT_NAME = "image";
  const OUTPUT_NAME = "probabilities";
  // Below this probability the answer is shown as a guess ("not sure: maybe 4"), lighter and
  // not bold: chapter 4 measured how often the model is right at each confidence.
  const SURE = 0.6;
  const INSTRUCTIONS = "Draw a digit in the box, as large as the box, or upload a picture.";
  // The outputs of `export-onnx --inside` (mnist_tutorial/export.py), after the probabilities.
  const BLOCK_OUTPUT = /^block(\d+)$/;
  const CONTRIBUTIONS = "contributions";
  const BIAS = "bias";
  // 1 where the checkpoint's "not a digit" rule answers, 0 where it abstains (chapter 8).
  const IS_DIGIT = "is_digit";
  // Where chapter 2 explains what the views show (built pages, next to this one).
  const CHAPTER_2 = "02_building_a_cnn.html";
  const MAPS_SECTION = `${CHAPTER_2}#sec-cnn-what-a-trained-networks`;
  const HEAD_SECTION = `${CHAPTER_2}#sec-cnn-the-default-cnn-layer`;
  // matplotlib's magma (feature maps, from 0) and RdBu_r (contributions, blue against, red for),
  // as in the book's figures: evenly spaced stops, interpolated into 256-entry tables.
  const MAGMA = lut("0000040a08221d114736106b51127c6a1c818326819c2e7fb73779d0416fe75263f56b5cfc8961fea772fec488fde2a3fcfdbf");
  const RDBU = lut("0530612065ab4393c390c4ddd1e5f0f7f6f6fddbc7f3a481d6604db1182b67001f");
  // How dark the ink is drawn over the contributions, as in mnist_tutorial.plots.plot_inside.
  const INK_OVER = 0.75;

  /** A 256-colour table (r, g, b bytes) through the hex colours, evenly spaced. */
  function lut(hex) {
    const stops = hex.match(/.{6}/g).map((colour) => [0, 2, 4].map((i) => parseInt(colour.slice(i, i + 2), 16)));
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const at = (i / 255) * (stops.length - 1);
      const low = Math.min(Math.floor(at), stops.length - 2);
      const t = at - low;
      for (let c = 0; c < 3; c++) table[3 * i + c] = Math.round(stops[low][c] * (1 - t) + stops[low + 1][c] * t);
    }
    return table;
  }

  /** The table's entry for a value in [0, 1]. */
  function shade(table, value) {
    return 3 * Math.max(0, Math.min(255, Math.round(255 * value)));
  }

  const number = (value, digits = 1) => value.toFixed(digits).replace("-", "−");
  const signed = (value) => (value < 0 ? "−" : "+") + Math.abs(value).toFixed(1);

  function element(tag, attributes = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  }

  /** The RGBA pixels of an image file, decoded as Pillow would: upright, no colour management. */
  async function decode(blob) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, {
        imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none",
      });
    } catch (error) {
      throw new MnistPreprocess.InvalidImageError(
        "this file is not a picture the browser can read (unknown format or damaged); save it as PNG or JPEG");
    }
    if (bitmap.width * bitmap.height > MnistPreprocess.MAX_PIXELS) {
      bitmap.close();
      throw new MnistPreprocess.InvalidImageError(
        `the picture is ${bitmap.width}x${bitmap.height} pixels, over the ${MnistPreprocess.MAX_PIXELS / 1e6}-megapixel ` +
        "limit; shrink it first");
    }
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    return { pixels, width: bitmap.width, height: bitmap.height, bitmap };
  }

  class Demo {
    constructor(root) {
      this.root = root;
      this.session = null;
      this.busy = false;
      this.pending = null;
      this.count = 0;
      this.last = null;
      this.timings = [];
      this.waiters = [];
      // The views inside the network, built once the model has said what it returns.
      this.inside = null;
      // The last reading's 28x28 field, answer and model outputs, for redrawing the views.
      this.current = null;
      // The digit whose evidence is shown: null follows the answer.
      this.chosen = null;
      this.build();
      this.ready = this.load();
    }

    build() {
      const id = (name) => `${this.root.id || "mnist-demo"}-${name}`;
      this.canvas = element("canvas", { width: 280, height: 280, class: "mnist-demo-pad", role: "img",
                                        "aria-label": "drawing area: draw one digit here with the mouse, " +
                                                      "a pen or a finger (or upload a picture below)" });
      this.context = this.canvas.getContext("2d", { willReadFrequently: true });
      this.clearButton = element("button", { type: "button", class: "mnist-demo-button mnist-demo-clear" },
                                 ["Clear"]);
      // The file input stays in the page (keyboard, screen readers, the tests) but is drawn as
      // the button its label is.
      this.upload = element("input", { type: "file", accept: "image/*", id: id("upload"),
                                       class: "mnist-demo-upload visually-hidden" });
      const uploadLabel = element("label", { for: id("upload"), class: "mnist-demo-button" },
                                  ["Upload a picture…"]);
      this.seen = element("canvas", { width: 28, height: 28, class: "mnist-demo-seen", role: "img",
                                      "aria-label": "the 28x28 picture the model reads" });
      this.verdict = element("div", { class: "mnist-demo-verdict" });
      this.answer = element("div", { class: "mnist-demo-answer" }, ["…"]);
      // Errors take the answer's place, so that nothing of an earlier reading stays on screen.
      this.error = element("p", { class: "mnist-demo-error", role: "alert" });
      this.error.hidden = true;
      this.reading = element("div", { class: "mnist-demo-reading", "aria-live": "polite", id: id("reading") },
                             [this.verdict, this.answer, this.error]);
      this.status = element("p", { class: "mnist-demo-status", role: "status" }, ["Loading the model…"]);
      this.bars = [];
      const chart = element("ul", { class: "mnist-demo-bars", "aria-label": "probability the model gives each digit" });
      for (let digit = 0; digit < 10; digit++) {
        const fill = element("span", { class: "mnist-demo-fill" });
        const value = element("span", { class: "mnist-demo-value" }, ["–"]);
        const bar = element("li", { class: "mnist-demo-bar", "data-digit": String(digit) }, [
          element("span", { class: "mnist-demo-label" }, [
            element("span", { class: "visually-hidden" }, ["digit "]), String(digit),
            element("span", { class: "visually-hidden" }, [": "])]),
          element("span", { class: "mnist-demo-track", "aria-hidden": "true" }, [fill]), value]);
        // A click on a bar shows that digit's evidence; the keyboard has the list beside the map.
        bar.addEventListener("click", () => this.choose(digit));
        chart.append(bar);
        this.bars.push({ fill, value, bar });
      }
      // Filled in by buildInside once the model is loaded, if it returns what is inside.
      this.insideRoot = element("section", { class: "mnist-demo-inside", "aria-label": "inside the network" });
      this.insideRoot.hidden = true;
      this.root.replaceChildren(
        element("div", { class: "mnist-demo-input" }, [
          this.canvas,
          element("div", { class: "mnist-demo-tools" }, [this.clearButton, this.upload, uploadLabel]),
          element("p", { class: "mnist-demo-hint" }, ["…or drop a picture on the box."])]),
        element("div", { class: "mnist-demo-output" }, [
          element("div", { class: "mnist-demo-top" }, [
            element("figure", {}, [this.seen, element("figcaption", {}, ["what the model sees"])]),
            this.reading]),
          chart, this.status]),
        this.insideRoot);
      this.clear();
      this.listen();
    }

    listen() {
      let drawing = false;
      let uploaded = false;
      const point = (event) => {
        const box = this.canvas.getBoundingClientRect();
        return [(event.clientX - box.left) * (this.canvas.width / box.width),
                (event.clientY - box.top) * (this.canvas.height / box.height)];
      };
      let previous = null;
      // One short segment per move, so a long drawing costs no more per move than a short one.
      const segment = (to) => {
        this.context.beginPath();
        this.context.moveTo(...previous);
        this.context.lineTo(...to);
        this.context.stroke();
        previous = to;
      };
      this.canvas.addEventListener("pointerdown", (event) => {
        if (uploaded) this.clear();
        uploaded = false;
        drawing = true;
        this.canvas.setPointerCapture(event.pointerId);
        previous = point(event);
        segment(previous);
        event.preventDefault();
      });
      this.canvas.addEventListener("pointermove", (event) => {
        if (!drawing) return;
        segment(point(event));
        this.predictCanvas();
      });
      const finish = () => {
        if (!drawing) return;
        drawing = false;
        this.predictCanvas();
      };
      this.canvas.addEventListener("pointerup", finish);
      this.canvas.addEventListener("pointercancel", finish);
      this.clearButton.addEventListener("click", () => { uploaded = false; this.clear(); });
      const readFile = async (file) => {
        uploaded = true;
        await this.ready;
        await this.request(() => this.predictFile(file));
      };
      this.upload.addEventListener("change", () => {
        if (this.upload.files.length) readFile(this.upload.files[0]);
      });
      this.canvas.addEventListener("dragover", (event) => event.preventDefault());
      this.canvas.addEventListener("drop", (event) => {
        event.preventDefault();
        if (event.dataTransfer.files.length) readFile(event.dataTransfer.files[0]);
      });
    }

    async load() {
      try {
        ort.env.wasm.wasmPaths = vendorBase + "onnxruntime-web/";
        // A static page is not cross-origin isolated, so WebAssembly threads are unavailable anyway.
        ort.env.wasm.numThreads = 1;
        this.session = await ort.InferenceSession.create(demoBase + "mnist_cnn.onnx", {
          executionProviders: ["wasm"], graphOptimizationLevel: "all",
        });
        // One run on a blank field: the shapes of what the model returns, and a first reading
        // that does not cost the reader's first stroke.
        const blank = await this.session.run({ [INPUT_NAME]: new ort.Tensor("uint8", new Uint8Array(784), [1, 1, 28, 28]) });
        if (this.session.outputNames.includes(CONTRIBUTIONS)) this.buildInside(blank);
        this.root.dataset.inside = this.inside ? "shown" : "none";
        this.root.dataset.state = "ready";
        this.say(INSTRUCTIONS);
      } catch (error) {
        this.root.dataset.state = "error";
        this.showError(`The model could not be loaded (${error.message || error}); reload the page.`);
        this.say("");
        throw error;
      }
    }

    say(message) {
      this.status.textContent = message;
    }

    /** Start again: an empty pad, no answer, no error, no file chosen. */
    clear() {
      this.clearPad();
      this.clearResult();
      this.upload.value = "";
      if (this.session) this.say(INSTRUCTIONS);
    }

    clearPad() {
      this.context.fillStyle = "#ffffff";
      this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
      this.context.strokeStyle = "#000000";
      this.context.lineWidth = PEN_WIDTH;
      this.context.lineCap = "round";
      this.context.lineJoin = "round";
    }

    /** Remove the last reading (picture seen, answer, bars) and any error. */
    clearResult() {
      this.seen.getContext("2d").clearRect(0, 0, 28, 28);
      this.verdict.textContent = "";
      this.answer.textContent = "…";
      this.answer.hidden = false;
      this.error.textContent = "";
      this.error.hidden = true;
      this.reading.classList.remove("mnist-demo-unsure", "mnist-demo-failed");
      this.root.dataset.result = "none";
      for (const bar of this.bars) {
        bar.fill.style.width = "0";
        bar.fill.classList.remove("mnist-demo-best");
        bar.value.textContent = "–";
      }
      this.current = null;
      if (this.inside) this.clearInside();
    }

    /** Show why a picture could not be read, where the answer was; no earlier reading stays. */
    showError(message) {
      this.clearResult();
      this.answer.hidden = true;
      this.error.textContent = message.charAt(0).toUpperCase() + message.slice(1);
      this.error.hidden = false;
      this.reading.classList.add("mnist-demo-failed");
      this.root.dataset.result = "error";
    }

    /** Run one prediction at a time; while one runs, keep only the latest request (an older one resolves to null). */
    request(job) {
      return new Promise((resolve) => {
        const entry = { job, resolve };
        if (this.busy) {
          if (this.pending) this.pending.resolve(null);
          this.pending = entry;
        } else {
          this.run(entry);
        }
      });
    }

    run(entry) {
      this.busy = true;
      entry.job()
        .then(entry.resolve, (error) => {
          this.fail(error);
          entry.resolve(null);
        })
        .finally(() => {
          this.busy = false;
          const next = this.pending;
          this.pending = null;
          if (next) {
            this.run(next);
          } else {
            this.waiters.splice(0).forEach((resolve) => resolve(this.last));
          }
        });
    }

    /** The last result, once every requested prediction has finished. */
    idle() {
      return this.busy ? new Promise((resolve) => this.waiters.push(resolve)) : Promise.resolve(this.last);
    }

    predictCanvas() {
      if (!this.session) return Promise.resolve(null);
      return this.request(() => {
        const started = performance.now();
        const { data, width, height } = this.context.getImageData(0, 0, this.canvas.width, this.canvas.height);
        return this.predictPixels(data, width, height, started, "drawing");
      });
    }

    async predictFile(file) {
      const started = performance.now();
      let decoded;
      try {
        decoded = await decode(file);
      } catch (error) {
        // Nothing of the previous drawing or reading stays beside the error.
        this.clearPad();
        throw error;
      }
      const { pixels, width, height, bitmap } = decoded;
      // Show the picture in the drawing area (display only: the model reads the decoded pixels).
      this.clearPad();
      this.clearResult();
      const scale = Math.min(this.canvas.width / width, this.canvas.height / height);
      this.context.drawImage(bitmap, (this.canvas.width - width * scale) / 2, (this.canvas.height - height * scale) / 2,
                             width * scale, height * scale);
      bitmap.close();
      return this.predictPixels(pixels, width, height, started, "upload");
    }

    /** Preprocess RGBA pixels, run the model, show and return the result. */
    async predictPixels(pixels, width, height, started, source) {
      let steps;
      try {
        steps = MnistPreprocess.preprocess(pixels, width, height);
      } catch (error) {
        if (error instanceof MnistPreprocess.InvalidImageError) {
          this.showError(error.message);
          this.say(source === "upload" ? "Try another picture, or draw a digit in the box." : INSTRUCTIONS);
          return null;
        }
        throw error;
      }
      const preprocessed = performance.now();
      const input = new ort.Tensor("uint8", steps.centred, [1, 1, 28, 28]);
      // One run gives the probabilities and everything the views inside show.
      const output = await this.session.run({ [INPUT_NAME]: input });
      const probabilities = Array.from(output[OUTPUT_NAME].data);
      const inferred = performance.now();
      const digit = probabilities.indexOf(Math.max(...probabilities));
      const isDigit = output[IS_DIGIT] ? output[IS_DIGIT].data[0] >= 0.5 : true;
      this.count += 1;
      this.show(steps.centred, digit, probabilities, isDigit);
      this.current = { centred: steps.centred, digit, output };
      if (this.inside) this.showInside();
      const finished = performance.now();
      this.last = {
        digit, isDigit, probabilities, source, centred: Array.from(steps.centred),
        ms: finished - started, preprocessMs: preprocessed - started, inferenceMs: inferred - preprocessed,
        drawMs: finished - inferred,
      };
      this.timings.push({ source, ms: this.last.ms, preprocessMs: this.last.preprocessMs,
                          inferenceMs: this.last.inferenceMs, drawMs: this.last.drawMs });
      this.root.dataset.predictions = String(this.count);
      this.root.dataset.digit = String(digit);
      return this.last;
    }

    show(centred, digit, probabilities, isDigit = true) {
      const seen = this.seen.getContext("2d");
      const image = seen.createImageData(28, 28);
      // MNIST stores ink as 255; the book draws every digit dark on light paper.
      centred.forEach((ink, i) => {
        image.data.set([255 - ink, 255 - ink, 255 - ink, 255], 4 * i);
      });
      seen.putImageData(image, 0, 0);
      const best = probabilities[digit];
      const sure = isDigit && best >= SURE;
      this.error.hidden = true;
      this.error.textContent = "";
      this.answer.hidden = false;
      this.answer.textContent = String(digit);
      this.verdict.textContent = !isDigit ? "not a digit? best guess" : sure ? "it reads" : "not sure: maybe";
      this.reading.classList.remove("mnist-demo-failed");
      this.reading.classList.toggle("mnist-demo-unsure", !sure);
      this.root.dataset.result = !isDigit ? "not-a-digit" : sure ? "sure" : "unsure";
      probabilities.forEach((p, i) => {
        this.bars[i].fill.style.width = `${(100 * p).toFixed(1)}%`;
        this.bars[i].value.textContent = `${(100 * p).toFixed(1)}%`;
        this.bars[i].fill.classList.toggle("mnist-demo-best", i === digit);
      });
      const percent = (p) => `${(100 * p).toFixed(1)}%`;
      if (!isDigit) {
        this.say(`Not a digit, it seems: the picture looks unlike the digits the model learned. ` +
                 `Its best guess is ${digit} (${percent(best)}).`);
      } else if (sure) {
        this.say(`It reads ${digit}, with probability ${percent(best)}.`);
      } else {
        const second = probabilities.indexOf(Math.max(...probabilities.filter((_, i) => i !== digit)));
        this.say(`Not sure: maybe ${digit} (${percent(best)}), maybe ${second} (${percent(probabilities[second])}).`);
      }
    }

    /** The views inside the network: the evidence map and every block's maps, shaped after a first run's outputs. */
    buildInside(output) {
      const id = (name) => `${this.root.id || "mnist-demo"}-${name}`;
      const link = (href, text) => element("a", { href }, [text]);
      this.chooser = element("select", { id: id("digit"), class: "mnist-demo-chooser" }, [
        element("option", { value: "" }, ["the answer"]),
        ...Array.from({ length: 10 }, (_, digit) => element("option", { value: String(digit) }, [String(digit)]))]);
      this.chooser.addEventListener("change", () => {
        this.choose(this.chooser.value === "" ? null : Number(this.chooser.value));
      });
      this.evidence = element("canvas", { width: 28, height: 28, class: "mnist-demo-evidence-map", role: "img",
                                          "aria-label": "the contributions of the 7x7 positions to the chosen " +
                                                        "digit's score, red for and blue against, under the ink" });
      this.evidenceImage = this.evidence.getContext("2d").createImageData(28, 28);
      this.evidenceDigit = element("span", {}, ["…"]);
      this.evidenceSum = element("p", { class: "mnist-demo-sum" }, ["–"]);
      this.evidenceLimit = [element("span", {}, ["–"]), element("span", {}, ["0"]), element("span", {}, ["–"])];
      const head = output[CONTRIBUTIONS].dims;
      const last = Object.keys(output).filter((name) => BLOCK_OUTPUT.test(name)).pop();
      const evidence = element("div", { class: "mnist-demo-evidence" }, [
        element("h3", {}, ["Where the evidence for ", this.evidenceDigit, " is"]),
        element("div", { class: "mnist-demo-evidence-view" }, [
          this.evidence,
          element("div", {}, [
            element("label", { for: id("digit") }, ["evidence for "]), this.chooser,
            element("div", { class: "mnist-demo-legend mnist-demo-diverging", "aria-hidden": "true" }),
            element("div", { class: "mnist-demo-legend-values" }, this.evidenceLimit),
            element("div", { class: "mnist-demo-legend-words" }, [element("span", {}, ["against"]),
                                                                  element("span", {}, ["for"])]),
            this.evidenceSum])]),
        element("p", { class: "mnist-demo-caption" }, [
          `The head turns block ${last.match(BLOCK_OUTPUT)[1]}'s ${output[last].dims[1]} maps into ten ` +
          `scores (logits), one per digit, and the probabilities come from those. A digit's score is a sum over ` +
          `the ${head[2]} × ${head[3]} positions, plus a bias, the score of maps with no feature anywhere and ` +
          "the same for every picture. Each cell is one position's share, red for the digit and blue against, " +
          "with the ink drawn over it, and the cells and the bias add up to the score exactly. With a hidden " +
          "layer in the head, as in the book's model, a cell's share is how much that position moves the score " +
          "on the way from no features to this picture's. Click a bar, or choose a digit, to see its evidence. ",
          link(HEAD_SECTION, "The head, in chapter 2"), "."])]);
      this.blocks = Object.keys(output).filter((name) => BLOCK_OUTPUT.test(name)).map((name) => {
        const [, channels, height, width] = output[name].dims;
        const index = name.match(BLOCK_OUTPUT)[1];
        const largest = element("span", {}, ["–"]);
        const group = element("div", { class: "mnist-demo-tiles", role: "group",
                                       "aria-label": `block ${index}: ${channels} feature maps` });
        group.classList.toggle("mnist-demo-tiles-fine", width > 7);
        const block = { name, number: index, channels, height, width, group, largest, tiles: [], scale: 1 };
        for (let channel = 0; channel < channels; channel++) {
          const canvas = element("canvas", { width, height });
          const button = element("button", { type: "button", class: "mnist-demo-tile", tabindex: channel ? "-1" : "0",
                                             title: `block ${index}, map ${channel}`,
                                             "aria-label": `block ${index}, map ${channel}: enlarge` }, [canvas]);
          button.addEventListener("click", () => this.openZoom(block, channel, button));
          const context = canvas.getContext("2d");
          block.tiles.push({ button, context, image: context.createImageData(width, height) });
        }
        group.append(...block.tiles.map((tile) => tile.button));
        group.addEventListener("keydown", (event) => this.moveFocus(block, event));
        block.view = element("div", { class: "mnist-demo-block" }, [
          element("p", { class: "mnist-demo-block-label" }, [
            `Block ${index}: ${channels} maps of ${height} × ${width}, largest here `, largest]),
          group]);
        return block;
      });
      const maps = element("div", { class: "mnist-demo-maps" }, [
        element("h3", {}, ["Feature maps"]),
        element("p", { class: "mnist-demo-caption" }, [
          "Each tile is one channel of a conv block's output, after its BatchNorm and ReLU (a block whose maps " +
          "are half the size of the block before it also pools): where the block finds its feature in this " +
          "picture. One scale per block, from black (0) to " +
          "light yellow (the block's largest value here). Click, tap or press Enter on a map to enlarge it; the " +
          "arrow keys move between maps. ",
          link(MAPS_SECTION, "Feature maps, in chapter 2"), "."]),
        element("div", { class: "mnist-demo-legend mnist-demo-sequential", "aria-hidden": "true" }),
        element("div", { class: "mnist-demo-legend-values", "aria-hidden": "true" }, [
          element("span", {}, ["0"]), element("span", {}, ["the block's largest"])]),
        ...this.blocks.map((block) => block.view)]);
      this.zoomCanvas = element("canvas", { role: "img", "aria-label": "the map, enlarged" });
      // The input beside it, to say where on the digit the map lights up.
      this.zoomSeen = element("canvas", { width: 28, height: 28, role: "img", "aria-label": "the 28x28 picture the model reads" });
      this.zoomTitle = element("h3", { id: id("zoom-title") });
      this.zoomText = element("p", {});
      const close = element("button", { type: "button", class: "mnist-demo-button" }, ["Close"]);
      this.zoomDialog = element("dialog", { class: "mnist-demo-zoom", "aria-labelledby": id("zoom-title") }, [
        this.zoomTitle,
        element("div", { class: "mnist-demo-zoom-view" }, [
          this.zoomCanvas, element("figure", {}, [this.zoomSeen, element("figcaption", {}, ["what the model sees"])])]),
        this.zoomText, close]);
      close.addEventListener("click", () => this.zoomDialog.close());
      // A click on the backdrop (outside the dialog's box) closes it too.
      this.zoomDialog.addEventListener("click", (event) => {
        if (event.target === this.zoomDialog) this.zoomDialog.close();
      });
      this.zoomDialog.addEventListener("close", () => {
        const opener = this.zoom && this.zoom.opener;
        this.zoom = null;
        if (opener) opener.focus();
      });
      this.zoom = null;
      this.insideRoot.replaceChildren(evidence, maps, this.zoomDialog);
      this.insideRoot.hidden = false;
      this.inside = true;
      this.clearInside();
    }

    /** Arrow keys, Home and End move between a block's tiles; only one of them is a Tab stop. */
    moveFocus(block, event) {
      const tiles = block.tiles.map((tile) => tile.button);
      const at = tiles.indexOf(document.activeElement);
      if (at < 0) return;
      const columns = getComputedStyle(block.group).gridTemplateColumns.split(" ").length;
      const to = { ArrowRight: at + 1, ArrowLeft: at - 1, ArrowDown: at + columns, ArrowUp: at - columns,
                   Home: 0, End: tiles.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      const next = tiles[Math.max(0, Math.min(tiles.length - 1, to))];
      tiles[at].tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    }

    /** Show this digit's evidence (null: the answer's) and mark its bar. */
    choose(digit) {
      this.chosen = digit;
      if (!this.inside) return;
      this.chooser.value = digit === null ? "" : String(digit);
      this.bars.forEach((bar, i) => bar.bar.classList.toggle("mnist-demo-chosen", i === digit));
      if (this.current) this.drawEvidence();
    }

    clearInside() {
      const clear = (canvas) => canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      clear(this.evidence);
      this.evidenceDigit.textContent = this.chosen === null ? "the answer" : String(this.chosen);
      this.evidenceSum.textContent = "–";
      this.evidenceLimit[0].textContent = this.evidenceLimit[2].textContent = "–";
      for (const block of this.blocks) {
        block.largest.textContent = "–";
        for (const tile of block.tiles) tile.context.clearRect(0, 0, block.width, block.height);
      }
      if (this.zoom) this.drawZoom();
    }

    showInside() {
      const { output } = this.current;
      for (const block of this.blocks) {
        const values = output[block.name].data;
        let largest = 0;
        for (let i = 0; i < values.length; i++) if (values[i] > largest) largest = values[i];
        block.scale = largest || 1;
        block.largest.textContent = number(largest, 2);
        const size = block.height * block.width;
        block.tiles.forEach((tile, channel) => {
          const pixels = tile.image.data;
          for (let i = 0, offset = channel * size; i < size; i++) {
            const k = shade(MAGMA, values[offset + i] / block.scale);
            pixels[4 * i] = MAGMA[k];
            pixels[4 * i + 1] = MAGMA[k + 1];
            pixels[4 * i + 2] = MAGMA[k + 2];
            pixels[4 * i + 3] = 255;
          }
          tile.context.putImageData(tile.image, 0, 0);
        });
      }
      this.drawEvidence();
      if (this.zoom) this.drawZoom();
    }

    /** The chosen digit's contributions, cell by cell, under the ink; one scale for all ten digits. */
    drawEvidence() {
      const { output, centred, digit: answer } = this.current;
      const digit = this.chosen === null ? answer : this.chosen;
      const contributions = output[CONTRIBUTIONS].data;
      const [, , rows, columns] = output[CONTRIBUTIONS].dims;
      let limit = 0;
      for (let i = 0; i < contributions.length; i++) limit = Math.max(limit, Math.abs(contributions[i]));
      limit = limit || 1;
      const base = digit * rows * columns;
      const pixels = this.evidenceImage.data;
      let sum = 0;
      for (let i = 0; i < rows * columns; i++) sum += contributions[base + i];
      for (let y = 0; y < 28; y++) {
        for (let x = 0; x < 28; x++) {
          const cell = Math.floor((y * rows) / 28) * columns + Math.floor((x * columns) / 28);
          const k = shade(RDBU, (contributions[base + cell] / limit + 1) / 2);
          const light = 1 - (INK_OVER * centred[28 * y + x]) / 255;
          const at = 4 * (28 * y + x);
          pixels[at] = RDBU[k] * light;
          pixels[at + 1] = RDBU[k + 1] * light;
          pixels[at + 2] = RDBU[k + 2] * light;
          pixels[at + 3] = 255;
        }
      }
      this.evidence.getContext("2d").putImageData(this.evidenceImage, 0, 0);
      const bias = output[BIAS].data[digit];
      this.evidenceDigit.textContent = String(digit);
      this.evidenceSum.textContent = `cells ${signed(sum)}, bias ${signed(bias)} = logit ${number(sum + bias)}`;
      this.evidenceLimit[0].textContent = number(-limit, 2);
      this.evidenceLimit[2].textContent = `+${number(limit, 2)}`;
    }

    openZoom(block, channel, opener) {
      this.zoom = { block, channel, opener };
      this.zoomCanvas.width = block.width;
      this.zoomCanvas.height = block.height;
      this.zoomTitle.textContent = `Block ${block.number}, map ${channel}`;
      this.drawZoom();
      if (!this.zoomDialog.open) this.zoomDialog.showModal();
    }

    drawZoom() {
      const { block, channel } = this.zoom;
      const context = this.zoomCanvas.getContext("2d");
      const size = `${block.height} × ${block.width}`;
      if (!this.current) {
        context.clearRect(0, 0, block.width, block.height);
        this.zoomSeen.getContext("2d").clearRect(0, 0, 28, 28);
        this.zoomText.textContent = `${size}. Draw a digit or upload a picture to see this map.`;
        return;
      }
      context.putImageData(block.tiles[channel].image, 0, 0);
      this.zoomSeen.getContext("2d").drawImage(this.seen, 0, 0);
      const values = this.current.output[block.name].data.subarray(
        channel * block.height * block.width, (channel + 1) * block.height * block.width);
      const largest = Math.max(...values);
      this.zoomText.textContent = `${size}, largest value ${number(largest, 2)} on the block's scale from 0 ` +
                                  `to ${number(block.scale, 2)}. Escape closes it.`;
    }

    fail(error) {
      if (error instanceof MnistPreprocess.InvalidImageError) {
        this.showError(error.message);
        this.say("Try another picture, or draw a digit in the box.");
        return;
      }
      this.showError(`Something went wrong: ${error.message || error}`);
      console.error(error);
    }
  }

  const root = document.getElementById("mnist-demo");
  if (root) {
    const demo = new Demo(root);
    window.mnistDemo = {
      ready: demo.ready,
      /** For the browser tests: predict an image file's bytes exactly as an upload is predicted. */
      predictBytes: async (bytes, type) => {
        await demo.ready;
        return demo.request(() => demo.predictFile(new Blob([bytes], { type })));
      },
      /** The last result once no prediction is running or waiting. */
      idle: () => demo.idle(),
      get last() { return demo.last; },
      get count() { return demo.count; },
      get timings() { return demo.timings; },
      /** The last reading's model outputs by name (Float32Arrays) and their shapes, or null. */
      get outputs() {
        if (!demo.current) return null;
        return Object.fromEntries(Object.entries(demo.current.output).map(
          ([name, tensor]) => [name, { data: tensor.data, dims: tensor.dims }]));
      },
    };
  }
})();
