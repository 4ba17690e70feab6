//! Type-strict readers for inventory values.
//!
//! The `config` crate converts between types on request: `user = 5` would become the user "5"
//! and `port = "22"` the port 22. An inventory that says `user = 5` is more likely a mistake
//! than a user called 5, so these readers take a value only in its own TOML type. They ask
//! the deserializer what it holds (`deserialize_any`) instead of asking for the wanted type,
//! which is what lets `config` convert. Environment overrides are read in their setting's type
//! first (`VOLLEY_PARALLEL=7` is a number, `VOLLEY_TIMEOUT=30` a string), so they pass the same
//! checks.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// A string, and nothing that could be turned into one.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(Text).map(Some)
}

/// A path, written as a string.
pub fn path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    deserializer
        .deserialize_any(Text)
        .map(|text| Some(text.into()))
}

/// A list of strings.
pub fn strings<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    deserializer.deserialize_any(Texts)
}

/// A whole number that fits `T`, and nothing written as a string or with a fraction.
pub fn number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    deserializer.deserialize_any(Number(PhantomData)).map(Some)
}

/// `true` or `false`, and nothing that could be turned into one (`"yes"`, `1`).
pub fn boolean<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    deserializer.deserialize_any(Boolean).map(Some)
}

struct Boolean;

impl Visitor<'_> for Boolean {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("true or false (without quotes)")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
        Ok(value)
    }
}

struct Text;

impl Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string (in quotes)")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
        Ok(value)
    }
}

struct Texts;

impl<'de> Visitor<'de> for Texts {
    type Value = Vec<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut texts = Vec::new();
        while let Some(text) = seq.next_element::<StrictText>()? {
            texts.push(text.0);
        }
        Ok(texts)
    }
}

/// One element of a list of strings, read strictly.
struct StrictText(String);

impl<'de> de::Deserialize<'de> for StrictText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StrictText, D::Error> {
        deserializer.deserialize_any(Text).map(StrictText)
    }
}

struct Number<T>(PhantomData<T>);

impl<T: TryFrom<u64> + TryFrom<i64>> Visitor<'_> for Number<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a whole number (without quotes)")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::custom(format!("{value} is out of range")))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::custom(format!("{value} is out of range")))
    }
}
