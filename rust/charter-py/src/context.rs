//! Request context from Python: a dict for `check`, columns (numpy arrays
//! or sequences) for `check_batch`. Only the keys some condition reads are
//! converted, and for `check` only when a condition is evaluated. A value
//! that cannot be converted is left out, so a condition reading it fails
//! closed (missing attribute).

use charter_core::cond::{Map, Value};
use charter_core::request::{Column, Columns, Context};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::cell::OnceCell;
use std::collections::HashMap;

/// Deepest nesting of lists and dicts converted (deeper values are left out).
const MAX_DEPTH: u32 = 32;

/// A Python value as a condition value: `None`, bool (before int), int
/// (within i64), float, str, list/tuple, dict with str keys; numpy scalars
/// through `__index__`/`__float__`. `None` if it does not convert.
pub fn to_value(obj: &Bound<'_, PyAny>, depth: u32) -> Option<Value> {
    if obj.is_none() {
        return Some(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Some(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        return i.extract::<i64>().ok().map(Value::Int);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Some(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_str().ok().map(|s| Value::Str(s.into()));
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|x| to_value(&x, depth + 1))
            .collect::<Option<Box<[Value]>>>()
            .map(Value::List);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|x| to_value(&x, depth + 1))
            .collect::<Option<Box<[Value]>>>()
            .map(Value::List);
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let k = k.cast::<PyString>().ok()?.to_str().ok()?.to_string();
            entries.push((k, to_value(&v, depth + 1)?));
        }
        return Some(Value::Map(Map::new(entries)));
    }
    numpy_scalar(obj)
}

/// numpy scalars (`np.int64(3)`, `np.float32(1.5)`, `np.bool_(True)`).
fn numpy_scalar(obj: &Bound<'_, PyAny>) -> Option<Value> {
    let ty = obj.get_type();
    let module = ty.module().ok()?;
    if module.to_str().ok()? != "numpy" {
        return None;
    }
    let name = ty.name().ok()?;
    let name = name.to_str().ok()?;
    if name == "bool" || name == "bool_" {
        return obj.is_truthy().ok().map(Value::Bool);
    }
    if name.starts_with("int") || name.starts_with("uint") {
        return obj.extract::<i64>().ok().map(Value::Int);
    }
    if name.starts_with("float") {
        return obj.extract::<f64>().ok().map(Value::Float);
    }
    None
}

/// A `check`'s context dict, converted on first read (the GIL is held:
/// a single check never releases it).
pub struct DictContext<'a, 'py> {
    dict: &'a Bound<'py, PyDict>,
    map: OnceCell<Map>,
}

impl<'a, 'py> DictContext<'a, 'py> {
    /// Over `dict`.
    pub fn new(dict: &'a Bound<'py, PyDict>) -> Self {
        DictContext {
            dict,
            map: OnceCell::new(),
        }
    }
}

impl Context for DictContext<'_, '_> {
    fn lookup(&self, key: &str, wanted: &[Box<str>]) -> Option<&Value> {
        self.map
            .get_or_init(|| {
                Map::new(wanted.iter().filter_map(|k| {
                    let v = self.dict.get_item(&**k).ok()??;
                    Some((k.clone(), to_value(&v, 0)?))
                }))
            })
            .get(key)
    }
}

/// Batch context columns: for each key conditions read, the dict's column
/// (a numpy array of bool/int/float, or any sequence) converted up front.
pub fn columns(dict: &Bound<'_, PyDict>, keys: &[Box<str>], n: usize) -> Result<Columns, String> {
    let mut cols = Vec::new();
    for k in keys {
        let Some(col) = dict.get_item(&**k).map_err(|e| e.to_string())? else {
            continue;
        };
        let values = column(&col, n)?;
        cols.push((k.clone(), values));
    }
    Ok(Columns::from_columns(cols))
}

fn column(col: &Bound<'_, PyAny>, n: usize) -> Result<Column, String> {
    macro_rules! typed {
        ($t:ty, $f:expr) => {
            if let Ok(a) = col.cast::<PyArray1<$t>>() {
                let ro = a.readonly();
                let out: Vec<Option<Value>> = ro.as_array().iter().map(|x| Some($f(*x))).collect();
                return check_len(out, n).map(|v| Column::Plain(v.into_boxed_slice()));
            }
        };
    }
    typed!(bool, Value::Bool);
    typed!(i64, Value::Int);
    typed!(i32, |x: i32| Value::Int(i64::from(x)));
    typed!(u32, |x: u32| Value::Int(i64::from(x)));
    typed!(u8, |x: u8| Value::Int(i64::from(x)));
    typed!(f64, Value::Float);
    typed!(f32, |x: f32| Value::Float(f64::from(x)));
    typed!(u64, |x: u64| i64::try_from(x)
        .map_or(Value::Float(x as f64), Value::Int));
    // Any other sequence (a list, an object array): each distinct Python
    // object is converted once (a column of repeated strings is a handful
    // of objects), and requests refer to it by index.
    let mut codes = Vec::with_capacity(n);
    let mut values = Vec::new();
    let mut seen: HashMap<usize, u32> = HashMap::new();
    let items = col
        .try_iter()
        .map_err(|_| "each context column must be a numpy array or a sequence".to_string())?;
    let mut keep = Vec::new();
    for item in items {
        let item = item.map_err(|e| e.to_string())?;
        let ptr = item.as_ptr() as usize;
        let code = match seen.get(&ptr) {
            Some(c) => *c,
            None => {
                let c = values.len() as u32;
                values.push(to_value(&item, 0));
                seen.insert(ptr, c);
                // Keep the object alive so its address is not reused by another.
                keep.push(item);
                c
            }
        };
        codes.push(code);
    }
    if codes.len() != n {
        return Err(format!(
            "each context column must have one value per request ({n}), got {}",
            codes.len()
        ));
    }
    Ok(Column::Coded {
        values: values.into_boxed_slice(),
        codes: codes.into_boxed_slice(),
    })
}

fn check_len(out: Vec<Option<Value>>, n: usize) -> Result<Vec<Option<Value>>, String> {
    if out.len() == n {
        Ok(out)
    } else {
        Err(format!(
            "each context column must have one value per request ({n}), got {}",
            out.len()
        ))
    }
}
