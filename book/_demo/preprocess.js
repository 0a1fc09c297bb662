// The browser's copy of mnist_tutorial.predict.preprocess_image: make any picture look like MNIST.
//
// Every step mirrors the Python code, and reproduces the integer arithmetic of Pillow 13 (pinned in
// requirements.txt: grey conversion, bilinear resampling and its pass order, reduce, box blur, alpha
// compositing) and NumPy's rounding (half to even), so that for the same RGBA pixels the browser's
// 28x28 picture is the one Python computes. tests/test_site.py checks it, picture by picture.
// Steps: grey working copy (longest side 96, blurred) -> ink map (paper's light and noise removed)
// -> crop to the digit (specks dropped) -> longest side 20 px -> centre of mass at the centre of 28x28.
(function (root, factory) {
  "use strict";
  if (typeof module === "object" && module.exports) {
    module.exports = factory();
  } else {
    root.MnistPreprocess = factory();
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const MAX_PIXELS = 50000000;
  const WORKING_SIDE = 96;
  const BOX_SIDE = 20;
  const FIELD_SIDE = 28;
  const MIN_CONTRAST = 0.08;
  const MIN_PIECE_SHARE = 0.1;
  const REDUCING_GAP = 2.0;

  class InvalidImageError extends Error {}

  /** A grey picture: width x height bytes, row by row. */
  function grey(width, height, data) {
    return { width, height, data: data || new Uint8Array(width * height) };
  }

  /** NumPy's and Python's round(): halves go to the even neighbour. */
  function roundHalfEven(value) {
    const floor = Math.floor(value);
    const fraction = value - floor;
    if (fraction > 0.5) return floor + 1;
    if (fraction < 0.5) return floor;
    return floor % 2 === 0 ? floor : floor + 1;
  }

  /** Pillow's ITU-R 601-2 luma in 16-bit fixed point (Convert.c, L24). */
  function luma(r, g, b) {
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
  }

  /** predict.flatten_transparency then convert("L"): see-through pixels laid on a contrasting background. */
  function toGrey(rgba, width, height) {
    const count = width * height;
    const out = grey(width, height);
    let opaque = true;
    for (let i = 0; i < count; i++) {
      if (rgba[4 * i + 3] !== 255) {
        opaque = false;
        break;
      }
    }
    if (opaque) {
      for (let i = 0; i < count; i++) out.data[i] = luma(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]);
      return out;
    }
    let weighted = 0;
    let alphaSum = 0;
    for (let i = 0; i < count; i++) {
      const alpha = rgba[4 * i + 3];
      weighted += luma(rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]) * alpha;
      alphaSum += alpha;
    }
    const background = weighted / Math.max(alphaSum, 1) < 128 ? 255 : 0;
    // Pillow's alpha_composite over an opaque background (AlphaComposite.c), then the luma.
    const channel = new Array(3);
    for (let i = 0; i < count; i++) {
      const alpha = rgba[4 * i + 3];
      for (let c = 0; c < 3; c++) {
        if (alpha === 0) {
          channel[c] = background;
        } else {
          const mixed = rgba[4 * i + c] * alpha * 128 + background * (255 - alpha) * 128 + (0x80 << 7);
          channel[c] = (((mixed >>> 8) + mixed) >>> 8) >>> 7;
        }
      }
      out.data[i] = luma(channel[0], channel[1], channel[2]);
    }
    return out;
  }

  /** Pillow's precompute_coeffs for the bilinear filter: the source window and 22-bit weights of each output pixel. */
  function bilinearCoefficients(inSize, in0, in1, outSize) {
    const scale = (in1 - in0) / outSize;
    const filterScale = Math.max(scale, 1.0);
    const support = 1.0 * filterScale;
    const step = 1.0 / filterScale;
    const starts = new Int32Array(outSize);
    const weights = [];
    for (let xx = 0; xx < outSize; xx++) {
      const centre = in0 + (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(centre - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(centre + support + 0.5), inSize) - xmin;
      const k = new Float64Array(Math.max(xmax, 0));
      let total = 0.0;
      for (let x = 0; x < xmax; x++) {
        const distance = Math.abs((x + xmin - centre + 0.5) * step);
        k[x] = distance < 1.0 ? 1.0 - distance : 0.0;
        total += k[x];
      }
      const fixed = new Int32Array(k.length);
      for (let x = 0; x < xmax; x++) {
        const normalised = total !== 0.0 ? k[x] / total : k[x];
        fixed[x] = Math.trunc(0.5 + normalised * 4194304);
      }
      starts[xx] = xmin;
      weights.push(fixed);
    }
    return { starts, weights };
  }

  /** Pillow's 8-bit convolution: rounding offset, 22-bit fixed point, clipped to 0-255. */
  function convolve(sum) {
    const value = Math.floor(sum / 4194304);
    return value < 0 ? 0 : value > 255 ? 255 : value;
  }

  /** One bilinear pass of Pillow's 8-bit resampling along rows (``across``) or columns, into width x height. */
  function resamplePass(image, width, height, coefficients, across, rowOffset) {
    // One loop per direction, on the arrays themselves: this pass is most of the demo's time per update.
    const out = grey(width, height);
    const source = image.data;
    const stride = image.width;
    const target = out.data;
    const { starts, weights } = coefficients;
    if (across) {
      for (let y = 0; y < height; y++) {
        const row = (y + rowOffset) * stride;
        for (let x = 0; x < width; x++) {
          const k = weights[x];
          const start = row + starts[x];
          let sum = 1 << 21;
          for (let i = 0; i < k.length; i++) sum += source[start + i] * k[i];
          target[y * width + x] = convolve(sum);
        }
      }
    } else {
      for (let y = 0; y < height; y++) {
        const k = weights[y];
        const start = starts[y];
        for (let x = 0; x < width; x++) {
          let sum = 1 << 21;
          for (let i = 0; i < k.length; i++) sum += source[(start + i) * stride + x] * k[i];
          target[y * width + x] = convolve(sum);
        }
      }
    }
    return out;
  }

  /** Pillow's Image.resize(size, BILINEAR, box) for a grey picture (Resample.c, ImagingResampleInner). */
  function resample(image, width, height, box) {
    const [x0, y0, x1, y1] = box.map(Math.fround);
    const needHorizontal = width !== image.width || x0 !== 0 || x1 !== width;
    const needVertical = height !== image.height || y0 !== 0 || y1 !== height;
    // Pillow runs the vertical pass first when the height shrinks more than twice as much as the width.
    const horizontalFirst = !(image.height - height > 0 && image.height - height > (image.width - width) * 2);
    const vertical = bilinearCoefficients(image.height, y0, y1, height);
    const horizontal = bilinearCoefficients(image.width, x0, x1, width);
    let out = image;
    if (horizontalFirst) {
      if (needHorizontal) {
        // Only the rows the vertical pass reads.
        const first = vertical.starts[0];
        const last = vertical.starts[height - 1] + vertical.weights[height - 1].length;
        out = resamplePass(out, width, last - first, horizontal, true, first);
        vertical.starts.forEach((start, y) => { vertical.starts[y] = start - first; });
      }
      if (needVertical) out = resamplePass(out, out.width, height, vertical, false, 0);
    } else {
      if (needVertical) out = resamplePass(out, out.width, height, vertical, false, 0);
      if (needHorizontal) out = resamplePass(out, width, out.height, horizontal, true, 0);
    }
    return out;
  }

  /** Pillow's division_UINT32: the 24-bit multiplier that replaces a division by ``count``. */
  function divisionMultiplier(count) {
    return Math.trunc(Math.fround(Math.fround(4294967296) / Math.fround(256 * count)));
  }

  /** Pillow's Image.reduce(factor) for a grey picture: the rounded mean of each block (Reduce.c). */
  function reduce(image, xFactor, yFactor) {
    const width = Math.ceil(image.width / xFactor);
    const height = Math.ceil(image.height / yFactor);
    const out = grey(width, height);
    for (let y = 0; y < height; y++) {
      const rows = Math.min(yFactor, image.height - y * yFactor);
      for (let x = 0; x < width; x++) {
        const columns = Math.min(xFactor, image.width - x * xFactor);
        const count = rows * columns;
        let sum = Math.trunc(count / 2);
        for (let yy = 0; yy < rows; yy++) {
          const row = (y * yFactor + yy) * image.width + x * xFactor;
          for (let xx = 0; xx < columns; xx++) sum += image.data[row + xx];
        }
        out.data[y * width + x] = Math.floor((sum * divisionMultiplier(count)) / 16777216);
      }
    }
    return out;
  }

  /** Pillow's resize(size, BILINEAR, reducing_gap=2.0): a block reduce first when shrinking a lot. */
  function resize(image, width, height, reducingGap) {
    if (width === image.width && height === image.height) return image;
    let box = [0, 0, image.width, image.height];
    let source = image;
    if (reducingGap !== null) {
      const xFactor = Math.trunc(image.width / width / reducingGap) || 1;
      const yFactor = Math.trunc(image.height / height / reducingGap) || 1;
      if (xFactor > 1 || yFactor > 1) {
        source = reduce(image, xFactor, yFactor);
        box = [0, 0, image.width / xFactor, image.height / yFactor];
      }
    }
    return resample(source, width, height, box);
  }

  /** Pillow's BoxBlur(1): a 3x3 mean with edge pixels repeated, rows then columns, rounded each time (BoxBlur.c). */
  function boxBlur(image) {
    const { width, height, data } = image;
    // (1 << 24) / 3 in float32, truncated: Pillow's weight of each of the three pixels.
    const weight = 5592405;
    const mean = (sum) => Math.floor((sum * weight + (1 << 23)) / 16777216);
    const across = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) {
      const row = y * width;
      for (let x = 0; x < width; x++) {
        across[row + x] = mean(data[row + Math.max(x - 1, 0)] + data[row + x] + data[row + Math.min(x + 1, width - 1)]);
      }
    }
    const out = grey(width, height);
    for (let y = 0; y < height; y++) {
      const above = Math.max(y - 1, 0) * width;
      const below = Math.min(y + 1, height - 1) * width;
      for (let x = 0; x < width; x++) {
        out.data[y * width + x] = mean(across[above + x] + across[y * width + x] + across[below + x]);
      }
    }
    return out;
  }

  /** predict.grey_image: grey, longest side ``side`` pixels, lightly blurred so single noisy pixels are not ink. */
  function greyImage(rgba, width, height, side = WORKING_SIDE) {
    const image = toGrey(rgba, width, height);
    const scale = side / Math.max(width, height);
    const size = [Math.max(1, roundHalfEven(width * scale)), Math.max(1, roundHalfEven(height * scale))];
    return boxBlur(resize(image, size[0], size[1], REDUCING_GAP));
  }

  /** predict.weighted_median: the median of ``values`` each repeated ``counts`` times. */
  function weightedMedian(values, counts) {
    const order = Array.from(values.keys()).sort((a, b) => values[a] - values[b] || a - b);
    let total = 0;
    for (const index of order) total += counts[index];
    let cumulative = 0;
    for (const index of order) {
      cumulative += counts[index];
      if (cumulative >= total / 2) return values[index];
    }
    return values[order[order.length - 1]];
  }

  const LEVELS = Array.from({ length: 256 }, (_, level) => level);

  function histogram(data) {
    const counts = new Array(256).fill(0);
    for (const value of data) counts[value]++;
    return counts;
  }

  /** predict.ink_is_dark: most pixels are background; ink is the extreme farther from the typical level. */
  function inkIsDark(image) {
    const typical = weightedMedian(LEVELS, histogram(image.data));
    let darkest = 255;
    let brightest = 0;
    for (const value of image.data) {
      if (value < darkest) darkest = value;
      if (value > brightest) brightest = value;
    }
    return typical - darkest >= brightest - typical;
  }

  /** predict.quadratic_terms: the row 1, x, y, x², xy, y² of a point. */
  function quadraticTerms(row, column) {
    return [1, column, row, column * column, column * row, row * row];
  }

  /** predict.least_squares: solve (TᵀT + 1e-9 I) c = Tᵀv by Gaussian elimination with partial pivoting. */
  function leastSquares(terms, values) {
    const n = 6;
    const matrix = Array.from({ length: n }, (_, i) => Array.from({ length: n + 1 }, (_, j) => (i === j ? 1e-9 : 0)));
    for (let p = 0; p < terms.length; p++) {
      const t = terms[p];
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < n; j++) matrix[i][j] += t[i] * t[j];
        matrix[i][n] += t[i] * values[p];
      }
    }
    for (let column = 0; column < n; column++) {
      let pivot = column;
      for (let row = column + 1; row < n; row++) {
        if (Math.abs(matrix[row][column]) > Math.abs(matrix[pivot][column])) pivot = row;
      }
      [matrix[column], matrix[pivot]] = [matrix[pivot], matrix[column]];
      for (let row = column + 1; row < n; row++) {
        const factor = matrix[row][column] / matrix[column][column];
        for (let j = column; j <= n; j++) matrix[row][j] -= factor * matrix[column][j];
      }
    }
    const solution = new Array(n).fill(0);
    for (let row = n - 1; row >= 0; row--) {
      let sum = matrix[row][n];
      for (let j = row + 1; j < n; j++) sum -= matrix[row][j] * solution[j];
      solution[row] = sum / matrix[row][row];
    }
    return solution;
  }

  /** NumPy's median: the middle value, or the mean of the two middle values. */
  function median(values) {
    const sorted = Float64Array.from(values).sort();
    const middle = sorted.length >> 1;
    return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  }

  /** predict.background: the paper's level under the ink, a quadratic surface fitted around the strokes. */
  function background(signed) {
    const coarse = reduce(signed, 4, 4);
    const scale = Math.max(signed.width, signed.height);
    const terms = [];
    const values = [];
    for (let r = 0; r < coarse.height; r++) {
      for (let c = 0; c < coarse.width; c++) {
        terms.push(quadraticTerms((r * 4 + 1.5) / scale, (c * 4 + 1.5) / scale));
        values.push(coarse.data[r * coarse.width + c]);
      }
    }
    const first = leastSquares(terms, values);
    const residual = values.map((value, p) => value - terms[p].reduce((sum, t, i) => sum + t * first[i], 0));
    const typical = median(residual);
    const spread = median(residual.map((value) => Math.abs(value - typical)));
    const limit = typical + Math.max(3 * 1.4826 * spread, 2.0);
    const paper = residual.map((value) => value <= limit);
    const [constant, x, y, xx, xy, yy] = leastSquares(terms.filter((_, p) => paper[p]),
                                                       values.filter((_, p) => paper[p]));
    const surface = new Float64Array(signed.width * signed.height);
    for (let r = 0; r < signed.height; r++) {
      const row = r / scale;
      for (let c = 0; c < signed.width; c++) {
        const column = c / scale;
        surface[r * signed.width + c] =
          (constant + y * row + yy * (row * row)) + (x + xy * row) * column + xx * (column * column);
      }
    }
    return surface;
  }

  /** predict.ink_map: each pixel's ink, 0 to 255, with uneven light and the paper's noise removed. */
  function inkMap(image, darkInk) {
    const signed = grey(image.width, image.height, darkInk ? image.data.map((v) => 255 - v) : image.data);
    const surface = background(signed);
    const ink = new Uint8Array(signed.data.length);
    for (let i = 0; i < ink.length; i++) {
      ink[i] = roundHalfEven(Math.min(Math.max(signed.data[i] - surface[i], 0), 255));
    }
    const counts = histogram(ink);
    const typical = weightedMedian(LEVELS, counts);
    const noise = typical + 4 * 1.4826 * weightedMedian(LEVELS.map((level) => Math.abs(level - typical)), counts);
    let strongest = 0;
    for (const value of ink) if (value > strongest) strongest = value;
    if (strongest < MIN_CONTRAST * 255 || strongest < 2 * noise) {
      throw new InvalidImageError(`no ink found: the picture is blank or too faint (contrast ${Math.round(strongest / 2.55)}%); ` +
                                  "write the digit darker or photograph it in better light");
    }
    const floor = Math.max(noise, 0.2 * strongest);
    const stretch = LEVELS.map((level) =>
      roundHalfEven(Math.min(Math.max((level - floor) / (strongest - floor), 0.0), 1.0) * 255));
    return grey(image.width, image.height, ink.map((value) => stretch[value]));
  }

  /** predict.crop_to_ink: the ink map cropped to the digit's box, pieces far lighter than the digit left out. */
  function cropToInk(ink) {
    const { width, height, data } = ink;
    const pieces = new Int32Array(width * height);
    const masses = [0];
    const stack = [];
    for (let start = 0; start < data.length; start++) {
      if (data[start] === 0 || pieces[start] !== 0) continue;
      const label = masses.length;
      let mass = 0;
      pieces[start] = label;
      stack.push(start);
      while (stack.length) {
        const p = stack.pop();
        mass += data[p];
        const py = Math.floor(p / width);
        const px = p - py * width;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const qy = py + dy;
            const qx = px + dx;
            if (qy < 0 || qy >= height || qx < 0 || qx >= width) continue;
            const q = qy * width + qx;
            if (data[q] !== 0 && pieces[q] === 0) {
              pieces[q] = label;
              stack.push(q);
            }
          }
        }
      }
      masses.push(mass);
    }
    const keep = MIN_PIECE_SHARE * Math.max(...masses);
    let top = height, bottom = -1, left = width, right = -1;
    const digit = new Uint8Array(data.length);
    for (let p = 0; p < data.length; p++) {
      if (pieces[p] !== 0 && masses[pieces[p]] >= keep) {
        digit[p] = data[p];
        const y = Math.floor(p / width);
        const x = p - y * width;
        top = Math.min(top, y);
        bottom = Math.max(bottom, y);
        left = Math.min(left, x);
        right = Math.max(right, x);
      }
    }
    const cropped = grey(right - left + 1, bottom - top + 1);
    for (let y = top; y <= bottom; y++) {
      cropped.data.set(digit.subarray(y * width + left, y * width + right + 1), (y - top) * cropped.width);
    }
    return cropped;
  }

  /** predict.scale_to_box: longest side ``box`` pixels, aspect ratio kept, brightest pixel 255. */
  function scaleToBox(cropped, box = BOX_SIDE) {
    const scale = box / Math.max(cropped.height, cropped.width);
    const size = [Math.max(1, roundHalfEven(cropped.width * scale)), Math.max(1, roundHalfEven(cropped.height * scale))];
    const scaled = resize(cropped, size[0], size[1], null);
    let brightest = 0;
    for (const value of scaled.data) if (value > brightest) brightest = value;
    // NumPy multiplies in float32: the factor is rounded to float32, and so is each product.
    const factor = Math.fround(255 / Math.max(brightest, 1.0));
    return grey(scaled.width, scaled.height, scaled.data.map((value) => roundHalfEven(Math.fround(value * factor))));
  }

  /** predict.centre_by_mass: a 28x28 field with the digit's centre of mass on its centre, shifted by whole pixels. */
  function centreByMass(scaled, field = FIELD_SIDE) {
    const { width, height, data } = scaled;
    let total = 0, rowMoment = 0, columnMoment = 0;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const value = data[y * width + x];
        total += value;
        rowMoment += value * y;
        columnMoment += value * x;
      }
    }
    const clip = (value, high) => Math.min(Math.max(value, 0), high);
    const top = clip(roundHalfEven(field / 2 - rowMoment / total), field - height);
    const left = clip(roundHalfEven(field / 2 - columnMoment / total), field - width);
    const centred = new Uint8Array(field * field);
    for (let y = 0; y < height; y++) {
      centred.set(data.subarray(y * width, (y + 1) * width), (top + y) * field + left);
    }
    return centred;
  }

  /**
   * The picture (RGBA bytes, width x height) made to look like MNIST: the uint8 28x28 field, and every step.
   * Throws InvalidImageError when it holds no digit.
   */
  function preprocess(rgba, width, height) {
    if (width === 0 || height === 0) throw new InvalidImageError(`the picture is ${width}x${height} pixels: it has no pixels`);
    if (width * height > MAX_PIXELS) {
      throw new InvalidImageError(`the picture is ${width}x${height} pixels, over the ${MAX_PIXELS / 1e6}-megapixel limit; shrink it first`);
    }
    const working = greyImage(rgba, width, height);
    const darkInk = inkIsDark(working);
    const ink = inkMap(working, darkInk);
    const cropped = cropToInk(ink);
    const scaled = scaleToBox(cropped);
    const centred = centreByMass(scaled);
    return { grey: working, darkInk, ink, cropped, scaled, centred };
  }

  return {
    FIELD_SIDE, MAX_PIXELS, InvalidImageError, boxBlur, centreByMass, cropToInk, greyImage, inkIsDark, inkMap, preprocess, reduce,
    resize, roundHalfEven, scaleToBox, toGrey,
  };
});
